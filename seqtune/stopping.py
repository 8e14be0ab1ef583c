"""SIGTERM (schedulers, `kill`) and SIGINT (Ctrl-C) during training: finish the current step, write a checkpoint,
say how to resume, exit 143 / 130. A second signal stops at once."""

from __future__ import annotations

import signal
import sys
import threading

import torch



class GracefulStop:
    """`with GracefulStop() as stop:` ... `if stop.requested(accelerator):` after each optimizer step."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum:  # the second signal: the user insists
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
        self.signum = signum
        print(f"\nseqtune: {signal.Signals(signum).name} received: finishing this step and writing a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def requested(self, accelerator) -> int:
        """The signal to stop on, agreed by every process (the launcher signals them at slightly different steps,
        so all take the largest; one all-reduce of a scalar per step, only when there are several processes)."""
        if accelerator.num_processes == 1:
            return self.signum
        flag = torch.tensor([self.signum], device=accelerator.device)
        return int(accelerator.reduce(flag, reduction="max").item())
