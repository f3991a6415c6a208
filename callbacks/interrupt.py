"""Ctrl-C during a run: every process stops, none is left waiting, and a second Ctrl-C stops at once.

The terminal sends SIGINT to its whole process group, and Lightning's DDP launcher starts the other devices'
processes in that group. Each would stop on its own, mid-step: one that leaves training while another is
inside a collective (the gradients' all-reduce, a barrier) leaves that one waiting forever, and one that dies
while still starting up makes Lightning's process observer SIGKILL process 0 before it has said anything. So
the processes Lightning starts ignore Ctrl-C from their first instruction (`launched_processes_ignore_ctrl_c`),
and process 0 alone stops the run: Lightning's graceful shutdown calls the `on_exception` hooks, where
`StopOnCtrlC` ends the other processes (as Lightning's own handler does after its teardown, but first, so that
none is left waiting while process 0 saves the learning curve and closes W&B) and gives SIGINT its default
action back (Lightning ignores it while shutting down: a second Ctrl-C did nothing).
"""

import signal
import sys

import pytorch_lightning as pl

from adapters import launched_processes_ignore_ctrl_c, stop_launched_processes  # noqa: F401 (re-exported)


class StopOnCtrlC(pl.Callback):
    """Lightning's graceful shutdown after Ctrl-C, made to stop every process and to obey a second Ctrl-C.

    Put it first among the callbacks: the others' `on_exception` (the learning curve) may take seconds."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        stop_launched_processes(trainer)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Lightning set SIG_IGN for its shutdown
        if trainer.is_global_zero:
            print("Stopping after Ctrl-C (press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
