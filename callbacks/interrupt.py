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

SIGTERM is how Kaggle, Colab, SLURM and `timeout` stop a job; SIGUSR1 is SLURM's warning (`--signal`). The
command line (`stop_on_signals`) makes them stop a run as Ctrl-C does: process 0 raises `Terminated`, a
KeyboardInterrupt, so the same graceful shutdown keeps the last checkpoint, records `interrupted` and says how to
go on, and the command exits with 128 + the signal (143 for SIGTERM). Why not Lightning's own SIGTERM handling:
it only sets a flag that the fit loop reads at its next batch (`predict` never does), then raises a SystemExit
whose code is 0, and under DDP it broadcasts from inside the signal handler, which left another rank in a
collective whose peer was gone (a gloo traceback). So while training, `StopOnCtrlC.setup` puts this handler back
in place of Lightning's; the other processes only note the signal (process 0 ends them, as after Ctrl-C) and,
should one fail meanwhile, end without a traceback (`quiet_exit_code`). SIGUSR1 is left to Lightning where it
requeues a SLURM job (SLURM's auto-requeue).
"""

import os
import signal
import sys

import pytorch_lightning as pl

from adapters import launched_processes_ignore_ctrl_c, stop_launched_processes  # noqa: F401 (re-exported)

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1"}
_received: int | None = None  # the stop signal this process received, None: none (or Ctrl-C)
_rank: int | None = None  # this process's rank once `stop_on_signals` installed the handlers; None: not installed


class Terminated(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGUSR1), stopping the run as Ctrl-C does."""


def _slurm_requeues() -> bool:
    """Lightning requeues a SLURM job on SIGUSR1 itself (its SLURM environment, auto-requeue on by default)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def _handle(signum: int, frame) -> None:
    global _received
    if _received is not None:  # a second signal: stop at once, as a second Ctrl-C does
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received = signum
    if _rank == 0:
        raise Terminated(NAMES.get(signum, str(signum)))


def _install() -> dict:
    """Our handler for each stop signal; returns the handlers it replaced."""
    return {signum: signal.signal(signum, _handle) for signum in NAMES
            if signum != signal.SIGUSR1 or not _slurm_requeues()}


def stop_on_signals(rank: int) -> dict:
    """From now on SIGTERM (and SIGUSR1) stop this process's runs as Ctrl-C does (the module docstring). `rank`:
    0 for the process that speaks and writes; the others only note the signal. (The command line only: in a
    notebook, SIGTERM is the kernel's shutdown.) Returns the handlers replaced, for `restore_signals`."""
    global _received, _rank
    _received, _rank = None, rank
    return _install()


def restore_signals(previous: dict) -> None:
    """The handlers `stop_on_signals` replaced, back (a command run from Python leaves the process as it was)."""
    global _rank
    _rank = None
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def stopped_by() -> str:
    """What stopped the run, in the words printed: "SIGTERM", "SIGUSR1" or "Ctrl-C"."""
    return NAMES.get(_received, "Ctrl-C")


def exit_code() -> int:
    """A shell's code for a process a signal stopped: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_received if _received is not None else signal.SIGINT)


def quiet_exit_code() -> int | None:
    """In a process other than process 0 that received a stop signal: the code to exit with, without a
    traceback, whatever failed after it (process 0 ends them, and a collective may fail first). None otherwise."""
    return exit_code() if _received is not None and _rank not in (None, 0) else None


class StopOnCtrlC(pl.Callback):
    """Lightning's graceful shutdown after Ctrl-C, made to stop every process and to obey a second Ctrl-C.

    Put it first among the callbacks: the others' `on_exception` (the learning curve) may take seconds. Where the
    command line took SIGTERM/SIGUSR1 (`stop_on_signals`), each loop's start takes them back from Lightning's
    handler."""

    # Lightning registers its signal handlers after `setup`, just before the loops start (and restores ours at
    # teardown): the first hook of each loop takes them back
    def _take_signals(self, *args) -> None:
        if _rank is not None:
            _install()

    on_sanity_check_start = on_train_start = on_validation_start = on_test_start = on_predict_start = _take_signals

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        stop_launched_processes(trainer)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Lightning set SIG_IGN for its shutdown
        if trainer.is_global_zero:
            again = "press Ctrl-C again" if _received is None else f"send {stopped_by()} again"
            print(f"Stopping after {stopped_by()} ({again} to stop at once)", file=sys.stderr, flush=True)
