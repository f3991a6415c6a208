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
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher


def launched_processes_ignore_ctrl_c(trainer: pl.Trainer) -> None:
    """The processes Lightning's DDP launcher starts for the other devices ignore Ctrl-C from their very first
    instruction, the import of torch included: an ignored signal stays ignored across exec (and Python then
    installs no KeyboardInterrupt handler), so SIGINT is ignored here just while the launcher starts them.
    (torchrun and SLURM start the processes themselves: nothing to do.)"""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher) or not hasattr(launcher, "_call_children_scripts"):
        return
    start = launcher._call_children_scripts

    def start_ignoring_ctrl_c() -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            start()
        finally:
            signal.signal(signal.SIGINT, previous)

    launcher._call_children_scripts = start_ignoring_ctrl_c


def stop_launched_processes(trainer: pl.Trainer) -> None:
    """End the processes Lightning's launcher started for the other devices, and wait for them.

    They are taken off the launcher's list first: Lightning's process observer watches that list, and on
    seeing a process killed it SIGKILLs this one too, within 5 s."""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher) or not launcher.procs:
        return
    children = list(launcher.procs)
    launcher.procs.clear()
    for child in children:
        child.kill()  # (they ignore SIGINT; SIGKILL is what Lightning's own handler sends them)
    for child in children:
        child.wait()


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
