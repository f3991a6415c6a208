"""The Python API (homework/cli/api.py, docs/notebooks.md): `hw1.fit(...)` and the other commands from Python.

Two calls in one process are two independent runs, a mistake raises HomeworkError with the command line's one
line, the Result names what was made, a call leaves the process as it found it, and a notebook (or a command
started from one) gets one line per epoch."""
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar

from datamodules.console import in_notebook, redraws
from homework import hw1, runs
from homework.cli.api import HomeworkError, Result, command_line, isolated
from homework.cli.output import EpochLines
from tests.conftest import user_error

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"max_epochs": 2, "trainer": {"enable_model_summary": False}, "diagnose": False}


def last_lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def test_options_become_the_command_line():
    args = command_line("fit", ({"trainer.max_epochs": 3}, "--seed_everything 1", ["--data.features", 16]),
                        {"model": {"optimizer": {"lr": 0.1}}, "max_steps": 5, "diagnose": False,
                         "trainer__logger": False, "data_dir": None, "model__hidden_dims": [8, 4]})
    assert args == ["fit", "--trainer.max_epochs", "3", "--seed_everything", "1", "--data.features", "16",
                    "--model.optimizer.lr", "0.1", "--trainer.max_steps", "5", "--diagnose", "false",
                    "--trainer.logger", "false", "--data.data_dir", "null", "--model.hidden_dims", "[8, 4]"]
    assert command_line("fit", (), {"resume": True, "print_config": False}) == ["fit", "--resume"]
    assert command_line("fit", (), {"resume": "runs/hw1/x"}) == ["fit", "--resume", "runs/hw1/x"]
    with pytest.raises(HomeworkError, match="not int"):
        command_line("fit", (3,), {})


def test_two_fits_in_one_process_then_predict_validate_and_diagnose(capsys):
    first = hw1.fit(**SHORT)
    lines = last_lines(capsys)
    assert isinstance(first, Result) and first.command == "fit"
    assert lines[-2] == f"Run directory: {first.run_dir}" and first.run_dir.is_dir()
    record = runs.read_record(first.run_dir)
    assert record["status"] == "finished" and first.monitor == "val_mse" == record["monitor"]
    assert first.best_score == pytest.approx(record["best_score"])
    assert first.best_checkpoint == first.run_dir / record["best_checkpoint"] and first.best_checkpoint.is_file()
    assert first.learning_curve == first.run_dir / "learning_curve.png" and first.submission is None
    assert any(line.startswith("epoch 1/1 ") for line in lines)  # one line per epoch (stderr is no terminal here)

    second = hw1.fit({"trainer.max_epochs": 3}, "--seed_everything 7", trainer={"enable_model_summary": False},
                     diagnose=False)
    assert second.run_dir != first.run_dir and runs.read_record(second.run_dir)["epochs"] == 3
    assert runs.read_record(second.run_dir)["seed"] == 7 and runs.read_record(first.run_dir)["status"] == "finished"

    predicted = hw1.predict(ckpt_path=first)  # a Result stands for its run
    out = capsys.readouterr().out
    assert predicted.submission == first.run_dir.resolve() / "pred.csv" and predicted.submission.is_file()
    assert f"Wrote predictions {predicted.submission} (" in out
    assert predicted.run_dir.resolve() == first.run_dir.resolve() and predicted.best_checkpoint.is_file()
    assert predicted.best_score == pytest.approx(first.best_score)

    scored = hw1.validate(ckpt_path=first.run_dir)
    assert scored.scores["val_mse"] == pytest.approx(first.best_score, rel=1e-4)

    diagnosed = hw1.diagnose(first.run_dir)
    assert "Diagnosis (practical methodology)" in diagnosed.diagnosis and diagnosed.diagnosis in capsys.readouterr().out


def test_a_mistake_raises_homework_error_with_the_command_lines_line(capsys):
    args = ["fit", "--trainer.max_epochs", "2", "--model.optimiser.lr", "0.1"]
    line = user_error(capsys, hw1.main, args)  # what the command line says, then exit code 2
    with pytest.raises(HomeworkError) as raised:
        hw1.fit(max_epochs=2, model={"optimiser": {"lr": 0.1}})
    assert f"error: {raised.value}" == line
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert raised.value._render_traceback_() == [f"HomeworkError: {raised.value}"]  # IPython: one line
    assert not isinstance(raised.value, SystemExit) and not list(runs.root_dir("hw1").glob("*"))
    from homework import HomeworkError as exported  # (the name the docs use)
    assert exported is HomeworkError

    with pytest.raises(HomeworkError, match="needs a trained model"):  # a mistake found after parsing
        hw1.predict()
    with pytest.raises(HomeworkError, match="does not exist"):
        hw1.predict(ckpt_path="runs/hw1/nothing-here.ckpt")


def snapshot() -> dict:
    loggers = {name: list(log.handlers) for name, log in logging.root.manager.loggerDict.items()
               if isinstance(log, logging.Logger)}
    wandb = sys.modules.get("wandb")
    return {"environ": dict(os.environ), "sigint": signal.getsignal(signal.SIGINT),
            "sigterm": signal.getsignal(signal.SIGTERM), "threads": torch.get_num_threads(),
            "rng": torch.get_rng_state(), "handlers": list(logging.getLogger().handlers),
            "loggers": {k: v for k, v in loggers.items() if v}, "running": set(threading.enumerate()),
            "wandb_run": getattr(wandb, "run", None)}


def test_a_fit_with_w_and_b_leaves_no_state_behind(default_logger):
    """The default logger (W&B offline, its service process and threads), 2 CPU threads asked for, the seed set:
    the process is as before."""
    torch.set_num_threads(1)
    before = snapshot()
    result = hw1.fit(**SHORT, torch_num_threads=2)
    assert list(result.run_dir.glob("wandb/offline-run-*"))  # W&B did run
    after = snapshot()
    assert after["environ"] == before["environ"]
    assert (after["sigint"], after["sigterm"]) == (before["sigint"], before["sigterm"])
    assert after["threads"] == 1 and torch.equal(after["rng"], before["rng"])
    assert after["handlers"] == before["handlers"] and after["loggers"] == before["loggers"]
    # (W&B's telemetry exporter, OpenTelemetry's "Otel..." threads, is one per process, made on W&B's first use
    # and ended by W&B at exit: not a thread of this run)
    new = {t for t in after["running"] - before["running"] if not t.name.startswith("Otel")}
    assert not new and after["wandb_run"] is None


def test_a_command_line_fit_after_an_api_call_still_logs_to_wandb(default_logger, capsys):
    """A fit run through main() leaves W&B's service (and its address in the environment) to the process; an
    API call that ends that service must not leave its address behind, or the next run cannot reach W&B."""
    cli = ["fit", "--trainer.max_epochs", "1", "--diagnose", "false"]
    hw1.main(cli)
    hw1.fit(**SHORT)
    capsys.readouterr()
    last = hw1.main(cli)
    assert "W&B could not start" not in capsys.readouterr().err
    assert list(Path(last.run_dir).glob("wandb/offline-run-*"))


def test_isolated_puts_back_what_a_command_changes():
    """The guard itself, on each kind of change a run makes (a passing fit test then means something)."""
    torch.set_num_threads(1)
    before = snapshot()
    log = logging.getLogger("tests.api")
    with isolated():
        os.environ["NTU_ML_TEST_VAR"] = "1"
        os.environ["HOME"] = "/elsewhere"
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        torch.set_num_threads(2)
        torch.manual_seed(1)
        log.addHandler(logging.StreamHandler())
        threading.Thread(target=lambda: threading.Event().wait(0.2)).start()
    after = snapshot()
    assert after["environ"] == before["environ"] and after["sigint"] == before["sigint"]
    assert after["threads"] == 1 and torch.equal(after["rng"], before["rng"])
    assert not log.handlers and after["running"] == before["running"]


def test_fit_shows_the_learning_curve_when_asked(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda image: shown.append(image))
    result = hw1.fit(**SHORT, show_curve=True)
    assert len(shown) == 1 and shown[0].data == result.learning_curve.read_bytes()


@pytest.mark.parametrize("variable, value", [("JPY_PARENT_PID", "4315"), ("COLAB_RELEASE_TAG", "release-colab_2026"),
                                             ("MPLBACKEND", "module://matplotlib_inline.backend_inline")])
def test_a_notebook_is_told_by_what_its_kernel_leaves_in_the_environment(variable, value, monkeypatch):
    """`!python homework/hw1.py fit` in Jupyter or Colab sees a terminal (a pty): the environment the kernel
    passes on says it is a notebook, where a redrawn bar is fragments."""
    for name in ("JPY_PARENT_PID", "COLAB_RELEASE_TAG", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert redraws() and not in_notebook()
    monkeypatch.setenv(variable, value)
    assert in_notebook() and not redraws()


def test_a_command_started_from_a_notebook_prints_one_line_per_epoch(monkeypatch):
    """One line per epoch on a notebook's pty, unless the command line asks for Lightning's bar."""
    monkeypatch.setenv("JPY_PARENT_PID", "4315")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    quick = ["fit", "--trainer.max_steps", "1", "--diagnose", "false", "--trainer.enable_model_summary", "false"]
    bars = [type(c) for c in hw1.main(quick).trainer.callbacks if isinstance(c, (EpochLines, TQDMProgressBar))]
    assert bars == [EpochLines]
    chosen = hw1.main([*quick, "--trainer.enable_progress_bar", "true"]).trainer.progress_bar_callback
    assert type(chosen) is TQDMProgressBar


class CtrlCAt(pl.Callback):
    """Presses Ctrl-C (SIGINT to this process) when epoch `epoch` ends, as the notebook's interrupt button does."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


CTRL_C_IN_A_KERNEL = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a kernel's (a pytest worker may hand down SIG_IGN)
from homework import hw1, runs
handler = signal.getsignal(signal.SIGINT)
callback = {"class_path": "tests.test_api.CtrlCAt", "init_args": {"epoch": 1}}
try:
    hw1.fit(max_epochs=50, diagnose=False, trainer={"callbacks": [callback], "enable_model_summary": False})
except KeyboardInterrupt:  # not SystemExit(130), which IPython would answer with "To exit: ..."
    (run,) = runs.root_dir("hw1").iterdir()
    print("raised KeyboardInterrupt;", "handler back" if signal.getsignal(signal.SIGINT) is handler else "handler lost",
          runs.read_record(run)["status"])
"""


def test_ctrl_c_says_what_was_kept_then_raises_keyboard_interrupt(tmp_path):
    """The notebook's interrupt button: SIGINT to the kernel's process, whose main thread runs the call. (In a
    process of its own: pytest-xdist's workers do not take SIGINT as a kernel does.)"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_KERNEL], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    out = done.stdout.strip().splitlines()
    assert done.returncode == 0 and out[-1] == "raised KeyboardInterrupt; handler back interrupted", done.stderr[-2000:]
    assert out[-4].startswith("Interrupted (Ctrl-C). Kept ") and out[-2].startswith("Continue: ")


def test_compare_and_k_fold_return_one_result_per_run(capsys):
    compared = hw1.compare("--optimizers sgd,adam", max_epochs=2, trainer={"enable_model_summary": False})
    assert [r.run_dir.parent for r in compared.runs] == [compared.run_dir] * 2 and compared.monitor == "val_mse"
    assert compared.best_score == min(r.best_score for r in compared.runs)  # val_mse: lower is better
    best = next(r for r in compared.runs if r.best_score == compared.best_score)
    assert compared.best_checkpoint == best.best_checkpoint and best.best_checkpoint.is_file()

    folds = hw1.fit(data={"num_folds": 2, "fold": "all"}, max_epochs=2, diagnose=False,
                    trainer={"enable_model_summary": False})
    assert len(folds.runs) == 2 and all(r.run_dir.parent == folds.run_dir for r in folds.runs)
    assert folds.scores["mean"] == pytest.approx((folds.runs[0].best_score + folds.runs[1].best_score) / 2)
    assert folds.best_score == folds.scores["mean"] and (folds.run_dir / "cv.json").is_file()
    predicted = hw1.predict(ckpt_path=folds)  # the folds' predictions averaged
    assert predicted.submission.is_file() and predicted.submission.parent == folds.run_dir.resolve()
