"""The run's phase table: where the whole command's time went, from the process's start to its end (start-up,
data, tokenization, model, training, evaluation, checkpoints, saving, report). Printed at the end of a run and
written to `all_results.json` as `phase_seconds`."""

from __future__ import annotations

import time

TRAINING = "training"


_command_started: float | None = None  # set when a `seqtune` command starts; the first run of it takes it


def command_started() -> None:
    """Called as a command starts (before its heavy imports): its first run's phase table counts from here."""
    global _command_started
    _command_started = time.perf_counter()


def take_start_up() -> float:
    """Seconds from the command's start to now, once (a sweep's later runs start with the imports done); 0 when
    the recipe was called as a library function."""
    global _command_started
    started, _command_started = _command_started, None
    return 0.0 if started is None else time.perf_counter() - started


class PhaseClock:
    """Marks in a recipe: each `mark(name)` gives the time since the previous mark to `name`, less the parts named in
    `inside`, which get rows of their own. "start-up" is the command's own: its start to the clock's creation
    (imports, flag parsing)."""

    def __init__(self):
        self.seconds: dict[str, float] = {"start-up": take_start_up()}
        self.last = time.perf_counter()

    def mark(self, name: str, inside: dict[str, float] | None = None) -> None:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.seconds.setdefault(name, 0.0)  # (rows in the order the run met them)
        for part, seconds in (inside or {}).items():
            seconds = min(max(seconds, 0.0), elapsed)
            self.seconds[part] = self.seconds.get(part, 0.0) + seconds
            elapsed -= seconds
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

    def table(self) -> dict[str, float]:
        """Seconds per phase, their total, and the share of the total that was not training."""
        total = sum(self.seconds.values())
        rows = {name: round(seconds, 2) for name, seconds in self.seconds.items()}
        rows["total"] = round(total, 2)
        rows["not_training_fraction"] = round(1 - self.seconds.get(TRAINING, 0.0) / total, 4) if total else 0.0
        return rows

    def line(self) -> str:
        rows = self.table()
        total = rows["total"] or 1.0
        parts = [f"{name} {seconds:.1f} s ({seconds / total:.0%})" for name, seconds in rows.items()
                 if name not in ("total", "not_training_fraction")]
        return (f"{', '.join(parts)}; total {rows['total']:.1f} s, "
                f"{rows['not_training_fraction']:.0%} not training")
