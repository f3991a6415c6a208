"""Every homework under Lightning DDP, on two CPU processes (gloo): `fit` completes once (one run directory,
one record, its last lines printed once, every epoch metric synchronised) and `predict` writes the very file
one process writes from the same checkpoint. HW1 trains on three processes (an odd share of every epoch).

Lightning's `ddp` strategy starts the other process by running the script again, so these tests run the
homework scripts as subprocesses (from a scratch directory, as a student would), with W&B as a new user has
it: offline, since nobody is logged in (a W&B call on process 0 alone once made every DDP fit hang).
"""
import importlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from homework import registry
from tests.conftest import QUIET, user_error

ROOT = Path(__file__).resolve().parents[1]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
FIT = ["fit", *DDP, "--trainer.num_sanity_val_steps", "0"]
#: Processes per homework's fit (given after DDP's --trainer.devices 2: the last one counts).
PROCESSES = {"hw1": 3}
HOMEWORKS = registry.names()


def in_default_suite(homework: str) -> bool:
    """DDP of a homework whose task is not a `ClassificationTask` runs by default: each such task has its own
    steps and metrics under DDP (today HW1: three processes, tensor rows, its whole-epoch step falling back,
    cross-validation; HW5: dict batches, generated sentences; HW8: ROC AUC over gathered scores, the classifier's
    statistics; HW11: two loaders a step, the domain loss, lambda's schedule), and together they take every shared
    DDP path (run directory and record from process 0, W&B offline, synced epoch metrics, the gathered predictions
    written once). A `ClassificationTask` homework (HW2-HW4, HW13) adds only its own batches to paths those
    already take, at ~40 s a fit or predict on 2 cores: `pytest -m slow` runs those."""
    from models.base import ClassificationTask

    return not issubclass(registry.module(homework).HOMEWORK.model_class, ClassificationTask)


UNDER_DDP = [hw if in_default_suite(hw) else pytest.param(hw, marks=pytest.mark.slow) for hw in HOMEWORKS]


def fit_args(homework: str) -> list[str]:
    """The homework's tiny recipe (homework/configs/hwN_tiny.yaml) on several processes."""
    return [*FIT, *registry.tiny(homework), "--trainer.devices", str(PROCESSES.get(homework, 2))]


#: What Lightning says when an epoch metric is logged unsynchronised under DDP.
UNSYNCED = "when logging on epoch level in distributed setting"


def run_script(homework: str, args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python homework/hwN.py ARGS` in `cwd`; a hung process group (a DDP deadlock) is killed, not waited on.
    W&B is as without a login (HOME is the test's temp dir, without a .netrc): offline, not disabled."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")},
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONWARNINGS": "default"}
    command = [sys.executable, str(ROOT / "homework" / f"{homework}.py"), *args, "--torch_num_threads", "1", *QUIET]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # rank 1 is its child: killed with it on a timeout
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{homework} {' '.join(args[:1])} hung for {timeout}s under DDP:\n{err[-3000:]}")
    result = subprocess.CompletedProcess(command, process.returncode, out, err)
    assert result.returncode == 0, f"{homework} {args[0]} failed:\n{err[-4000:]}"
    return result


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory):
    """One multi-process `fit` per homework, shared by the tests below: (scratch directory, completed process)."""
    fits = {}

    def fit(homework: str):
        if homework not in fits:
            cwd = tmp_path_factory.mktemp(f"ddp_{homework}")
            fits[homework] = cwd, run_script(homework, fit_args(homework), cwd)
        return fits[homework]

    return fit


def assert_completed_once(cwd: Path, homework: str, result: subprocess.CompletedProcess) -> None:
    """One run directory, finished, with its checkpoints, config and W&B run; its last lines printed once."""
    (run,) = [d for d in (cwd / "runs" / homework).iterdir()]  # the other processes made no directory of their own
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["best_checkpoint"]
    assert (run / record["best_checkpoint"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == record["epochs"] - 1
    out = result.stdout
    next_line = f"Next: python {ROOT / 'homework' / homework}.py predict"
    for line in (f"Best {record['monitor']} = ", "Run directory: ", next_line):
        assert out.count(line) == 1, (line, out[-2000:])
    assert out.rstrip().splitlines()[-1].startswith("Next: ")
    assert (result.stdout + result.stderr).count("DEMO DATA") == 1  # the demo banner, from process 0 only
    assert UNSYNCED not in result.stderr, [line for line in result.stderr.splitlines() if UNSYNCED in line][:3]
    assert list(run.glob("wandb/offline-run-*/files/lightning_config.yaml"))  # tracked, offline


@pytest.mark.parametrize("homework", UNDER_DDP)
def test_fit_on_several_processes_completes_once(ddp_fit, homework):
    cwd, result = ddp_fit(homework)
    assert_completed_once(cwd, homework, result)


def test_spawning_strategies_are_refused_in_one_line(capsys):
    """ddp_spawn's processes hand back only the weights: the run's record and results would be silently lost."""
    main = importlib.import_module("homework.hw1").main
    line = user_error(capsys, main, ["fit", *DDP[:-1], "ddp_spawn", *QUIET])
    assert line.startswith("error: --trainer.strategy ddp_spawn: ") and "use --trainer.strategy ddp" in line


@pytest.mark.parametrize("homework", UNDER_DDP)
def test_predict_on_two_processes_writes_the_one_process_file(ddp_fit, homework, monkeypatch, capsys):
    cwd, _ = ddp_fit(homework)
    monkeypatch.chdir(cwd)
    result = run_script(homework, ["predict", "--ckpt_path", "best", *DDP, "--submission.output_dir", "two"], cwd)
    assert result.stdout.count("Wrote ") == 1, result.stdout
    main = importlib.import_module(f"homework.{homework}").main
    main(["predict", "--ckpt_path", "best", "--trainer.devices", "1", "--submission.output_dir", "one", *QUIET])
    # the submission (beside it: .ntu-ml-outputs.json, the folder's record of its files, and a homework's pictures)
    one = Path("one") / importlib.import_module(f"homework.{homework}").HOMEWORK.datamodule_class.submission_filename
    two = Path("two") / one.name
    assert two.read_bytes() == one.read_bytes()
    lines = one.read_text().splitlines()
    predicted = [line.rpartition(",")[2] for line in lines[1:]] if one.suffix == ".csv" else lines
    # the model tells samples apart, so a row out of place would show
    assert len(set(predicted)) > (len(predicted) // 2 if homework == "hw1" else 1)


def test_hw1_whole_epoch_steps_fall_back_to_one_minibatch_per_step_under_ddp(ddp_fit):
    """HW1's default (the whole epoch in one Lightning step) trains on three processes exactly as
    --data.minibatches_per_step 1 does: each process gets a third of the minibatches, one per step."""
    cwd, result = ddp_fit("hw1")
    n = PROCESSES["hw1"]
    assert result.stdout.count(f"Training on {n} processes: one minibatch per step") + \
        result.stderr.count(f"Training on {n} processes: one minibatch per step") == 1
    (epoch,) = [d for d in (cwd / "runs" / "hw1").iterdir()]
    run_script("hw1", [*fit_args("hw1"), "--data.minibatches_per_step", "1"], cwd)
    (single,) = [d for d in (cwd / "runs" / "hw1").iterdir() if d != epoch]
    first, second = (json.loads((d / "run.json").read_text()) for d in (epoch, single))
    assert first["best_score"] == second["best_score"]
    steps = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] for d in (epoch, single)]
    batch_size = 128
    train_rows = 1500 - int(1500 * 0.2)  # the demo's training file, less the validation split
    assert steps[0] == steps[1] == 2 * math.ceil(math.ceil(train_rows / batch_size) / n)  # 2 epochs


def test_cross_validation_predict_averages_the_folds_on_two_processes(monkeypatch, capsys, tmp_path):
    """`predict --ckpt_path <cv dir>` under DDP: every process's share of every fold, averaged, written once."""
    main = importlib.import_module("homework.hw1").main
    main(["fit", "--data.num_folds", "2", "--data.fold", "all", "--trainer.max_epochs", "1", *QUIET])
    (cv_dir,) = list((tmp_path / "runs" / "hw1").iterdir())
    main(["predict", "--ckpt_path", str(cv_dir), "--submission.output_dir", "one", *QUIET])
    result = run_script("hw1", ["predict", "--ckpt_path", str(cv_dir), *DDP, "--submission.output_dir", "two"],
                        tmp_path)
    assert result.stdout.count("Wrote ") == 1 and result.stderr.count("Predicting with ") == 2
    assert (tmp_path / "two" / "pred.csv").read_bytes() == (tmp_path / "one" / "pred.csv").read_bytes()
