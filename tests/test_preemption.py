"""SIGTERM, as Kaggle, Colab's runtime manager, SLURM and `timeout` stop a job: like Ctrl-C, never as a crash.

A fit stopped by SIGTERM exits with 143 (128 + 15), records `interrupted`, keeps its last checkpoint and prints the
`--resume` command, which continues it; `predict` stops at once and writes nothing; on two processes (DDP) every
process stops and none prints a traceback. A fit killed without a word (SIGKILL, the OOM killer, a power cut) is
read as stopped, not `running`, and resumes. The commands run for real, in their own process, as a student's do.
"""
import json
import os
import signal
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from homework import runs
from homework.hw1 import main
from tests.conftest import QUIET
from tests.test_interrupt import (DDP, ENDLESS, FAST, SCRIPT, Command, last_checkpoint,
                                  living_processes, run_dir, stopped_kept_and_resumed)


class Term(Command):
    """A command stopped as a job scheduler stops it: SIGTERM to its process (or, `group`, to every process)."""

    def ctrl_c(self, group: bool = False) -> None:  # (what `interrupt_after_first_epochs` sends)
        (os.killpg if group else os.kill)(self.pgid, signal.SIGTERM)


def test_sigterm_keeps_the_run_and_its_resume_command_continues_it(tmp_path):
    stopped_kept_and_resumed(tmp_path, Term(tmp_path, ["fit", *ENDLESS, *FAST]), 143, "SIGTERM")


class SlowPredict(pl.Callback):
    """Makes each predict batch take a minute: SIGTERM surely comes mid-predict, and must not wait for it."""

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        print("predicting", flush=True)
        time.sleep(60)


def test_sigterm_stops_predict_at_once_and_writes_nothing(tmp_path):
    trained = Command(tmp_path, ["fit", "--trainer.max_epochs", "2", *FAST], name="fit")
    assert trained.finish(timeout=180) == 0, trained.text()[-3000:]
    run = run_dir(tmp_path)
    command = Term(tmp_path, ["predict", "--ckpt_path", str(run), "--trainer.callbacks+=" + f"{__name__}.SlowPredict"],
                   name="predict")
    command.wait_for(lambda: "predicting" in command.out.read_text(), "the first predict batch")
    sent = time.monotonic()
    command.ctrl_c()
    assert command.finish(timeout=30) == 143, command.text()[-3000:]
    assert time.monotonic() - sent < 20  # not after the minute the batch takes
    assert command.last_lines(1) == ["Interrupted (SIGTERM)"]
    assert not list(run.glob("*.csv")) and not list(run.glob(".*tmp*"))  # no submission, not half of one
    assert "Traceback" not in command.err.read_text()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_sigterm_to_every_process_of_a_two_process_fit_ends_without_a_traceback(tmp_path):
    command = Term(tmp_path, ["fit", *DDP, *ENDLESS, *FAST])
    command.wait_for(lambda: "epoch 1" in command.out.read_text(), "two epochs")
    command.ctrl_c(group=True)  # SLURM's scancel, a container's stop: every process of the job
    assert command.finish() == 143, command.text()[-3000:]
    deadline = time.monotonic() + 20
    while living_processes(command.pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not living_processes(command.pgid), living_processes(command.pgid)
    run = run_dir(tmp_path)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert command.last_lines(1) == [f"Continue: python {SCRIPT} fit --resume {run.relative_to(tmp_path)}"]
    assert "Traceback" not in command.err.read_text(), command.err.read_text()[-3000:]


def test_a_fit_killed_without_a_word_reads_as_stopped_and_resumes(tmp_path, capsys):
    command = Command(tmp_path, ["fit", *ENDLESS, *FAST])
    command.wait_for(lambda: "epoch 2" in command.out.read_text() and last_checkpoint(tmp_path) is not None,
                     "three epochs and last.ckpt")
    run = run_dir(tmp_path)
    assert runs.read_record(run)["status"] == "running"  # alive: its lock is held
    command.kill()  # SIGKILL: the OOM killer, a power cut, `kill -9`; nothing runs after it
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # the last thing it wrote
    assert runs.read_record(run)["status"] == "stopped"  # its lock is free: no process trains there
    # killed while saving a new best, the record names a file never written (the hook that records it runs first)
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "best_checkpoint": "checkpoints/best-epoch=999.ckpt"}))
    found = runs.read_record(run)  # the best the folder holds, found by its own saved state
    assert (run / found["best_checkpoint"]).is_file() and f"{found['best_score']:.4f}" in found["best_checkpoint"]
    assert runs.find_best(tmp_path / "runs" / "hw1").reason.startswith(
        f"the best of 1 comparable run(s) (same data and split): {run.name} (stopped without saying why (killed?)), ")

    main(["diagnose", str(run)])  # (in this process: the commands after a kill are the student's next ones)
    out = capsys.readouterr().out
    epochs = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] + 1
    assert out.startswith(f"Run {run} (stopped without saying why (killed?), {epochs} epochs)"), out[:300]
    main(["fit", "--resume", str(run), "--trainer.max_epochs", str(epochs + 1), *QUIET])
    assert capsys.readouterr().out.startswith(f"Resuming run {run.name}, which stopped without saying why (killed?), "
                                              f"from last.ckpt (the end of epoch {epochs - 1})")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["epochs"] == epochs + 1 and "error" not in record
