"""The training loop (`fit`) over a small typed state: steps, epochs, position in the data, best evaluation."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from seqtune.batching import close_workers, workers_started_quietly
from seqtune.compiling import mark_step_begin
from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")


@dataclass
class LoopState:
    """Everything the loop needs to continue exactly where it stopped; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs finished
    batches_in_epoch: int = 0  # batches of the current epoch consumed (to skip them when resuming)
    samples: int = 0
    real_tokens: int = 0
    train_time: float = 0.0  # seconds in the loop, evaluations and checkpoints excluded
    eval_time: float = 0.0  # seconds evaluating during training
    checkpoint_time: float = 0.0  # seconds writing checkpoints
    best_metric: float | None = None
    best_step: int | None = None
    best_metrics: dict | None = None
    best_predictions: list | None = None  # the best evaluation's predicted ids, for the confusion matrix
    best_logits: list | None = None  # and its logits (both orders averaged): ensembles and calibration, no 2nd pass
    finished: bool = False  # the last step's epoch end (evaluation, checkpoint) is done
    pending_losses: list = field(default_factory=list)  # losses of the steps since the last log record
    evals_without_improvement: int = 0  # evaluations since the best one (--early_stopping_patience)
    stopped_early: bool = False  # the patience ran out: the run ends at this step
    best_threshold: float | None = None  # multi-label: the probability threshold of the best evaluation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LoopState":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def problem(cls, values: dict) -> str | None:
        """What makes `values` no state this loop wrote: a missing field of the position in the data, or a value
        of another type than the field's (a field a newer seqtune added may be missing: it takes its default)."""
        missing = [name for name in POSITION_FIELDS if name not in values]
        if missing:
            return f"no {', '.join(missing)}"
        for name, kind in cls.__annotations__.items():
            value = values.get(name)
            if name in values and not any(_is(value, k.strip()) for k in kind.split("|")):
                return f"'{name}' is {value!r}, not {kind}"
        return None


POSITION_FIELDS = ("step", "epoch", "batches_in_epoch", "samples", "train_time", "finished")


def _is(value, kind: str) -> bool:
    """`value` is of the annotated type `kind` (the JSON types a loop state holds)."""
    if kind == "None":
        return value is None
    if kind == "bool" or isinstance(value, bool):
        return kind == "bool" and isinstance(value, bool)
    return isinstance(value, {"int": int, "float": (int, float), "list": list, "dict": dict}[kind])


@dataclass(frozen=True)
class Plan:
    """When things happen, in optimizer steps."""

    max_steps: int
    steps_per_epoch: int | None  # None for a stream: its epochs are not known
    log_every: int
    eval_every: int | None  # None: evaluate per epoch (or never, see `eval_per_epoch`)
    eval_per_epoch: bool
    save_every: int | None

    @property
    def num_epochs(self) -> int:
        return 1 if self.steps_per_epoch is None else math.ceil(self.max_steps / self.steps_per_epoch)

    def epoch_at(self, step: int) -> float | None:
        return None if self.steps_per_epoch is None else round(step / self.steps_per_epoch, 4)


@dataclass
class Hooks:
    """What the recipe does around the loop: evaluate (and keep the best), write a checkpoint, log a record."""

    evaluate: Callable[[LoopState], None]
    checkpoint: Callable[[LoopState], str]
    log: Callable[[dict], None]
    after_step: list = field(default_factory=list)  # callables (state) -> None, for tests and tools


class EpochBatches:
    """The batches of one epoch, from a position in it (resuming), for map-style data or a stream. As a context,
    it stops the loaders' workers when training ends, however it ends."""

    def __init__(self, accelerator, loader, sampler=None):
        self.accelerator, self.loader, self.sampler = accelerator, loader, sampler
        self.skipping = None  # the loader of a resumed epoch's rest (its own workers)

    def __call__(self, epoch: int, skip: int):
        if self.sampler is None:  # an endless stream, re-read up to the checkpoint's batch; not placed by accelerate
            return (batch.to(self.accelerator.device) for batch in self.loader.skip(skip))
        self.sampler.set_epoch(epoch)
        # accelerate's loader re-seeds its sampler with its own count of iterations, which starts at 0 in a resumed
        # run: set it to the epoch we are in, or every epoch after a resume would repeat another epoch's order
        self.loader.set_epoch(epoch)
        if skip:
            close_workers(self.skipping)
            self.skipping = self.accelerator.skip_first_batches(self.loader, skip)
        return _first_batch_quietly(self.skipping if skip else self.loader)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for loader in (self.loader, self.skipping):
            close_workers(loader)


def _first_batch_quietly(loader):
    """The loader's batches; its first is fetched with stop signals blocked, since that is when its workers start."""
    batches = iter(loader)
    with workers_started_quietly():
        first = next(batches, None)
    if first is not None:
        yield first
        yield from batches


def fit(accelerator, model, optimizer, scheduler, batches: EpochBatches, plan: Plan, state: LoopState, hooks: Hooks,
        stop, max_grad_norm: float, bf16: bool, progress: bool, cuda_graphs: bool = False) -> int:
    """Train until `plan.max_steps`, evaluating and checkpointing as planned. A stop signal ends the loop after the
    step it arrived in, with a checkpoint: then the signal number is returned (0 otherwise). `cuda_graphs`: the
    model replays CUDA graphs (`seqtune.compiling`): each step is marked, and its loss kept as a copy."""
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16)
    losses = LossWindow(accelerator, plan)
    bar = tqdm(total=plan.max_steps, initial=state.step, desc="Training", unit="step", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30,  # a log file gets a line every 30 s
               disable=not progress)
    clock = Clock(state)
    losses.restore(state.pending_losses)
    model.train()
    signum = 0
    while not state.finished:
        if state.step < plan.max_steps:  # (a checkpoint written at the last step may still owe its epoch's end)
            for batch in batches(state.epoch, state.batches_in_epoch):
                if cuda_graphs:
                    mark_step_begin()
                with accelerator.accumulate(model):
                    with autocast:
                        loss = model(**batch).loss
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients and max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.add_micro(loss.detach().clone() if cuda_graphs else loss.detach(), batch)
                state.batches_in_epoch += 1
                state.samples += batch["input_ids"].shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                bar.update(1)
                losses.end_step(grad_norm)
                for hook in hooks.after_step:
                    hook(state)
                # the last step is not interrupted: the run finishes normally
                signum = stop.requested(accelerator) if state.step < plan.max_steps else 0
                after_step(state, plan, hooks, losses, clock, scheduler, bar, signum)
                if state.step >= plan.max_steps or signum or state.stopped_early:
                    break
            else:  # the epoch ran to its end
                state.epoch += 1
                state.batches_in_epoch = 0
            if signum:
                break
        state.finished = state.step >= plan.max_steps or state.epoch >= plan.num_epochs or state.stopped_early
        end_epoch(state, plan, hooks, losses, clock)
        signum = 0 if state.finished else stop.requested(accelerator)  # arrived during the epoch's end
        if signum:
            break
    bar.close()
    return signum


def after_step(state: LoopState, plan: Plan, hooks: Hooks, losses: "LossWindow", clock: "Clock", scheduler, bar,
               signum: int) -> None:
    """Log every `log_every` steps; evaluate and checkpoint when the plan says so (or a signal asks for a stop)."""
    step = state.step
    evaluate_now = plan.eval_every is not None and step % plan.eval_every == 0
    save_now = bool(plan.save_every) and step % plan.save_every == 0 or bool(signum)
    if step % plan.log_every == 0 or evaluate_now or step >= plan.max_steps:
        record = losses.flush(state, clock, scheduler)
        hooks.log(record)
        bar.set_postfix(loss=record["loss"], samples_s=record["samples_per_second"], refresh=False)
    if evaluate_now or save_now:
        with clock.paused(losses):
            if evaluate_now:
                timed(state, "eval_time", hooks.evaluate)
            if save_now:
                checkpoint(state, hooks, losses)


def end_epoch(state: LoopState, plan: Plan, hooks: Hooks, losses: "LossWindow", clock: "Clock") -> None:
    """At the end of an epoch (or of the run): check the losses, evaluate per the plan, write a checkpoint."""
    losses.check(state)
    with clock.paused(losses):
        if plan.eval_per_epoch or (plan.eval_every is not None and state.step % plan.eval_every and state.finished):
            timed(state, "eval_time", hooks.evaluate)
        state.finished = state.finished or state.stopped_early  # the evaluation can end the run: the checkpoint
        # written next must say so, or a resume would train on
        checkpoint(state, hooks, losses)


def checkpoint(state: LoopState, hooks: Hooks, losses: "LossWindow") -> None:
    """Write a checkpoint; the losses not logged yet travel with it, so a resumed run logs what this one would."""
    state.pending_losses = losses.reduced_pending()
    timed(state, "checkpoint_time", hooks.checkpoint)


def timed(state: LoopState, field_name: str, hook) -> None:
    """Run `hook(state)`, adding its seconds to the state's `field_name` (the run's phase table)."""
    start = time.perf_counter()
    hook(state)
    setattr(state, field_name, getattr(state, field_name) + time.perf_counter() - start)


class Clock:
    """Training time in the loop, with evaluations and checkpoints left out."""

    def __init__(self, state: LoopState):
        self.state, self.start = state, time.perf_counter()

    def elapsed(self) -> float:
        return self.state.train_time + time.perf_counter() - self.start

    @contextlib.contextmanager
    def paused(self, losses: "LossWindow"):
        """Evaluations and checkpoints inside: their time is not training time."""
        self.state.train_time += time.perf_counter() - self.start
        losses.sync_tokens(self.state)
        try:
            yield
        finally:
            self.start = time.perf_counter()


class LossWindow:
    """Losses kept on the device between logging points: one host sync per log line, not per step."""

    def __init__(self, accelerator, plan: Plan):
        self.accelerator, self.plan = accelerator, plan
        self.micro: list[torch.Tensor] = []
        self.pending: list[torch.Tensor] = []
        self.grad_norm = None
        self.real_tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)

    def add_micro(self, loss: torch.Tensor, batch) -> None:
        self.micro.append(loss)
        self.real_tokens += batch["attention_mask"].sum()

    def end_step(self, grad_norm) -> None:
        self.pending.append(torch.stack(self.micro).mean().float())
        self.micro = []
        self.grad_norm = grad_norm

    def reduced_pending(self) -> list[float]:
        """The pending losses averaged over the processes (every process calls this at the same step): kept as
        they are, and returned for the checkpoint. The mean of equal values is exact, so logging them later gives
        the record an uninterrupted run writes."""
        if not self.pending:
            return []
        values = self.accelerator.reduce(torch.stack(self.pending), reduction="mean")
        self.pending = list(values)
        return values.tolist()

    def restore(self, values: list[float]) -> None:
        device = self.real_tokens.device
        self.pending = [torch.tensor(v, dtype=torch.float32, device=device) for v in values]

    def sync_tokens(self, state: LoopState) -> None:
        state.real_tokens += int(self.real_tokens)
        self.real_tokens.zero_()

    def check(self, state: LoopState, values: torch.Tensor | None = None) -> None:
        """Raise at the first non-finite loss among the steps since the last check."""
        values = values if values is not None else (torch.stack(self.pending) if self.pending else torch.zeros(0))
        bad = (~torch.isfinite(values)).nonzero()
        if not len(bad):
            return
        index = int(bad[0])
        step = state.step - len(values) + index + 1
        epoch = self.plan.epoch_at(step)
        raise SeqtuneError(
            f"the training loss became {float(values[index]):.4g} at step {step}"
            f"{'' if epoch is None else f' (epoch {epoch:.2f})'}: lower --learning_rate, raise --warmup_ratio, check "
            "the data for broken rows, or try --no_bf16. Nothing was saved after the last checkpoint.")

    def flush(self, state: LoopState, clock: Clock, scheduler) -> dict:
        """The record of the steps since the last flush (losses averaged over every process)."""
        values = self.accelerator.reduce(torch.stack(self.pending), reduction="mean")
        self.pending = []
        self.check(state, values)
        return {"step": state.step, "epoch": self.plan.epoch_at(state.step), "loss": round(float(values.mean()), 6),
                "learning_rate": scheduler.get_last_lr()[0],
                "grad_norm": None if self.grad_norm is None else round(float(self.grad_norm), 4),
                "samples_per_second": round(state.samples / clock.elapsed(), 2)}
