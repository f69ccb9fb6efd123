"""Stopping a run cleanly on a signal: finish the optimizer step, write a checkpoint, exit.

SIGTERM (what a scheduler sends before preemption, and what `accelerate launch`/torchrun forwards to its
workers when it receives one), Ctrl-C (SIGINT) and training.checkpoint_signal (SIGUSR1 by default, for
SLURM's `--signal=USR1@120`) only set a flag. The training loop asks at the end of every optimizer step,
after the update, and under DDP the flag is summed over processes, so every rank stops at the same step
and writes the same checkpoint (no rank waits forever at a barrier another rank never reaches). A second
Ctrl-C raises KeyboardInterrupt at once: the user means it.
"""

from __future__ import annotations

import signal

import torch


class StopRequest:
    """Installs the handlers on construction (main thread), restores the previous ones on restore()."""

    def __init__(self, extra_signal: str | None):
        names = ["SIGTERM", "SIGINT", *([extra_signal] if extra_signal else [])]
        self.received: str | None = None
        self.previous = {}
        for name in names:
            number = getattr(signal, name)
            self.previous[number] = signal.signal(number, self._handle)

    def _handle(self, number, frame) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = self.received or signal.Signals(number).name

    def agreed(self, accelerator) -> str | None:
        """The signal to stop on if any process received one (a collective: every process calls it)."""
        if accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([1.0 if self.received else 0.0], device=accelerator.device)
        if accelerator.reduce(flag, reduction="sum").item() == 0:
            return None
        return self.received or "a signal on another process"

    def exit_status(self) -> int:
        number = getattr(signal, self.received, None) if self.received else None
        return 128 + int(number) if number else 143

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
