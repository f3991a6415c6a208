"""Ctrl-C during a run: every process stops, none is left waiting, and a second Ctrl-C stops at once.

The terminal sends SIGINT to its whole process group, and Lightning's DDP launcher starts the other devices'
processes in that group. Each would stop on its own, mid-step: one that leaves training while another is
inside a collective (the gradients' all-reduce, a barrier) leaves that one waiting forever, and Lightning's
process observer then SIGKILLs process 0 before it has said what was kept. So the processes Lightning starts
ignore Ctrl-C (`ignore_ctrl_c_if_launched`, first thing in the command), and process 0 alone stops the run:
Lightning's graceful shutdown calls the `on_exception` hooks, where `StopOnCtrlC` ends the other processes
(as Lightning's own handler does after its teardown, but first, so that none is left waiting while process
0 saves the learning curve and closes W&B) and gives SIGINT its default action back (Lightning ignores it
while shutting down: a second Ctrl-C did nothing).
"""

import os
import signal
import sys

import pytorch_lightning as pl
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher


def launched_by_lightning() -> bool:
    """This process was started by Lightning's DDP launcher for another device: it runs the command again with
    LOCAL_RANK > 0 (torchrun and SLURM also set RANK / SLURM_PROCID, and handle Ctrl-C themselves)."""
    return (int(os.environ.get("LOCAL_RANK", 0) or 0) > 0
            and "RANK" not in os.environ and "SLURM_PROCID" not in os.environ)


def ignore_ctrl_c_if_launched() -> None:
    """In a process Lightning's launcher started: ignore Ctrl-C; process 0 stops the run and this process."""
    if launched_by_lightning():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        child.kill()  # (they ignore SIGINT; SIGKILL is what Lightning's own handler sends)
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
            print("Stopping after Ctrl-C: keeping what was saved (press Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)
