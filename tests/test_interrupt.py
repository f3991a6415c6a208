"""Ctrl-C during `fit`, as a student presses it in a terminal: SIGINT to the command's whole process group.

It ends like every other command: exit code 130, run.json "interrupted", the learning curve of the epochs done,
and last lines that say what was kept and the command that continues the run, which then does. A second Ctrl-C
stops at once; on two processes (DDP) every process stops; before the first checkpoint nothing is kept.
The runs use W&B as a new user has it: offline (no login), not disabled.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
#: Longer than any test waits: the run must still be training when Ctrl-C comes (HW1's demo fit early-stops
#: after ~800 epochs of ~40 ms otherwise).
ENDLESS = ["--trainer.max_epochs", "100000", "--early_stopping.patience", "100000"]
#: No diagnosis after training (a fit that is interrupted never gets there); one torch thread (2 busy cores).
FAST = ["--diagnose", "false", "--torch_num_threads", "1"]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
SCRIPT = ROOT / "homework" / "hw1.py"


def wandb_offline_env() -> dict[str, str]:
    """The environment of a student who never ran `wandb login`: W&B runs offline (HOME is the test's temp dir,
    without a .netrc). conftest turns W&B off for in-process tests; these subprocesses get the default back."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


class Command:
    """`python homework/hw1.py ARGS` in its own process group (as a terminal runs it), output to files."""

    def __init__(self, cwd: Path, args: list[str], name: str = "fit", python: tuple[str, ...] = ()) -> None:
        self.cwd, self.out, self.err = cwd, cwd / f"{name}.out", cwd / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([sys.executable, *python, str(SCRIPT), *args], cwd=cwd,
                                            env=wandb_offline_env(), stdout=out, stderr=err, start_new_session=True)
        self.pgid = self.process.pid

    def text(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait_for(self, condition, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the command ended (code {self.process.returncode}) before {what}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} after {timeout}s:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def ctrl_c(self) -> None:
        os.killpg(self.pgid, signal.SIGINT)  # what the terminal does: every process of the foreground group

    def finish(self, timeout: float = 90) -> int:
        """The exit code; a process that does not end (a hang in a collective) fails the test, and is killed."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {timeout}s after Ctrl-C:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def last_lines(self, n: int = 3) -> list[str]:
        return self.out.read_text().rstrip().splitlines()[-n:]


def run_dir(cwd: Path) -> Path:
    (directory,) = list((cwd / "runs" / "hw1").iterdir())
    return directory


def last_checkpoint(cwd: Path) -> Path | None:
    found = list((cwd / "runs" / "hw1").glob("*/checkpoints/last.ckpt")) if (cwd / "runs" / "hw1").is_dir() else []
    return found[0] if found else None


def living_processes(pgid: int) -> list[str]:
    """The processes of a process group that have not ended (zombies, waiting to be reaped, have ended)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def interrupt_after_first_epochs(command: Command) -> None:
    """Ctrl-C once the run has printed an epoch line and saved its last checkpoint."""
    command.wait_for(lambda: "epoch 0" in command.out.read_text() and last_checkpoint(command.cwd) is not None,
                     "epoch line and last.ckpt")
    command.ctrl_c()


def stopped_kept_and_resumed(tmp_path: Path, command: Command, code: int, word: str) -> Path:
    """Stop `command` (a fit) after its first epochs as `word` does (Ctrl-C, SIGTERM): exit `code`, the run kept as
    `interrupted` with its last lines, then the printed `--resume` command continues it to the end. Its run."""
    interrupt_after_first_epochs(command)
    assert command.finish() == code, command.text()[-3000:]
    run = run_dir(tmp_path)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["epochs"] >= 1  # not "failed": it can go on
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    kept, where, resume = command.last_lines()
    assert kept.startswith(f"Interrupted ({word}). Kept ") and "last.ckpt" in kept, kept
    assert where == f"Run directory: {run.relative_to(tmp_path)}"
    assert resume == f"Continue: python {SCRIPT} fit --resume {run.relative_to(tmp_path)}"
    assert "Traceback" not in command.err.read_text()

    # the printed command continues the run, in its directory (two epochs more, so that it ends)
    more = ["--trainer.max_epochs", str(saved["epoch"] + 3)]
    resumed = Command(tmp_path, [*resume.removeprefix(f"Continue: python {SCRIPT} ").split(), *more, *FAST],
                      name="resume")
    assert resumed.finish(timeout=180) == 0, resumed.text()[-3000:]
    assert run_dir(tmp_path) == run
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["epochs"] == saved["epoch"] + 3 and len(record["resumed"]) == 1
    assert resumed.out.read_text().splitlines()[0].startswith(f"epoch {saved['epoch'] + 1}/")
    return run


def test_ctrl_c_keeps_the_run_and_its_resume_command_continues_it(tmp_path):
    command = Command(tmp_path, ["fit", *ENDLESS, *FAST])
    run = stopped_kept_and_resumed(tmp_path, command, 130, "Ctrl-C")
    assert (run / "learning_curve.png").is_file() and "W&B could not close" not in command.text()
    assert list(run.glob("wandb/offline-run-*"))  # W&B ran, offline, as without a login, and was closed


class SlowShutdown(pl.Callback):
    """Makes the graceful shutdown after Ctrl-C take a minute, so that a second Ctrl-C surely comes during it."""

    def on_exception(self, trainer, pl_module, exception) -> None:
        time.sleep(60)


def test_second_ctrl_c_stops_at_once(tmp_path):
    command = Command(tmp_path, ["fit", *ENDLESS, *FAST, "--trainer.callbacks", f"{__name__}.SlowShutdown"])
    interrupt_after_first_epochs(command)
    command.wait_for(lambda: "Ctrl-C again" in command.err.read_text(), "shutdown message")
    second = time.monotonic()
    command.ctrl_c()
    assert command.finish(timeout=30) == -signal.SIGINT  # ended by the signal, not after the minute's shutdown
    assert time.monotonic() - second < 15
    run = run_dir(tmp_path)  # what was saved stays, and says so
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] >= 0


class SlowStart(pl.Callback):
    """Holds the fit before its first epoch, so that Ctrl-C surely comes before the first checkpoint."""

    def on_fit_start(self, trainer, pl_module) -> None:
        print("fit started", flush=True)
        time.sleep(60)


def test_ctrl_c_before_the_first_checkpoint_keeps_nothing(tmp_path):
    command = Command(tmp_path, ["fit", *ENDLESS, *FAST, "--trainer.callbacks", f"{__name__}.SlowStart"])
    command.wait_for(lambda: "fit started" in command.out.read_text(), "fit start")
    command.ctrl_c()
    assert command.finish() == 130, command.text()[-3000:]
    (last,) = command.last_lines(1)
    assert last.startswith("Interrupted (Ctrl-C) before the first checkpoint: nothing was kept, and the run "
                           "directory runs/hw1/"), last
    assert not (tmp_path / "runs").exists()
    assert "Traceback" not in command.err.read_text()


def test_ctrl_c_while_torch_loads_ends_in_one_line(tmp_path):
    # `-X importtime` reports each finished import on stderr: Ctrl-C comes once the entry point's first import is
    # done and torch, Lightning and the homework's code are still loading (seconds)
    command = Command(tmp_path, ["fit"], python=("-X", "importtime"))
    command.wait_for(lambda: "homework.cli.startup" in command.err.read_text(), "the entry point's first import",
                     timeout=60)
    command.ctrl_c()
    code = command.finish()
    assert code in (130, -signal.SIGINT), command.text()[-3000:]  # -SIGINT: ended by it, a shell's 130
    err = command.err.read_text()
    assert "Traceback" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1] == "Interrupted (Ctrl-C) while starting; nothing was written", err[-3000:]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_ctrl_c_stops_every_process_of_a_two_process_fit(tmp_path):
    command = Command(tmp_path, ["fit", *DDP, *ENDLESS, *FAST])
    interrupt_after_first_epochs(command)
    assert command.finish() == 130, command.text()[-3000:]
    deadline = time.monotonic() + 20  # (W&B's service process leaves when it sees its parent gone)
    while living_processes(command.pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not living_processes(command.pgid), living_processes(command.pgid)
    run = run_dir(tmp_path)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert (run / "learning_curve.png").is_file()
    assert command.last_lines(1) == [f"Continue: python {SCRIPT} fit --resume {run.relative_to(tmp_path)}"]
    assert "Traceback" not in command.err.read_text()
