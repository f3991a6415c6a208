"""#11: the same seed gives the same run; a run killed with SIGKILL resumes (`fit --resume`) to the weights of
one that never stopped; `last.ckpt` is the newest epoch and survives a kill while it is written."""

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from homework import registry
from tests.conftest import QUIET

ROOT = Path(__file__).resolve().parents[1]
HW1_FAST = ["--trainer.max_epochs", "6", "--model.dropout", "0.2", "--early_stopping.patience", "100", *QUIET]


def weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def run_dirs(root: str | Path = "runs/hw1") -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def hw(name: str, args: list[str], check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python homework/<name>.py ARGS` in a subprocess (the only way to SIGKILL a run for real)."""
    # runs/ in the working directory (conftest's NTU_ML_HOME=. is not yet set when a module's fixture runs), W&B
    # off: these tests are about resuming, and every process is killed or run twice
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "NTU_ML_HOME": "."}
    done = subprocess.run([sys.executable, str(ROOT / "homework" / f"{name}.py"), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


# --- the same seed, the same run: every homework -------------------------------------------------------------
def _tiny(homework: str) -> list[str]:
    """Each homework's tiny recipe (homework/configs/hwN_tiny.yaml), two epochs of three batches, on its demo data;
    HW1 (a whole epoch per step) with dropout, so that the seed has randomness to drive."""
    if homework == "hw1":
        return ["--trainer.max_epochs", "2", *HW1_FAST[2:]]
    return [*registry.tiny(homework), "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3"]


@pytest.mark.parametrize("homework", registry.names())
def test_two_runs_with_the_same_seed_give_the_same_weights_and_metrics(homework):
    main = importlib.import_module(f"homework.{homework}").main
    clis = [main(["fit", *_tiny(homework), "--trainer.logger", "false"]) for _ in range(2)]
    first, second = (Path(c.trainer.checkpoint_callback.last_model_path) for c in clis)
    assert first.parent != second.parent and first.name == "last.ckpt"
    assert_same_weights(first, second)
    metrics = [{k: float(v) for k, v in c.trainer.callback_metrics.items()} for c in clis]
    assert metrics[0] == metrics[1]
    records = [json.loads((Path(c.run_dir) / "run.json").read_text()) for c in clis]
    assert records[0]["seed"] == records[1]["seed"] is not None  # the seed is recorded on the run
    if homework == "hw1":  # another seed: another run (the seed does drive initialisation and data order)
        other = main(["fit", *_tiny(homework), "--trainer.logger", "false", "--seed_everything", "7"])
        other_weights = weights(Path(other.trainer.checkpoint_callback.last_model_path))
        assert not any(torch.equal(a, b) for a, b in zip(weights(first).values(), other_weights.values()))


def test_augmentation_does_not_depend_on_the_number_of_workers():
    """HW4's random crops are drawn per item from (seed, epoch, position): 0 or 2 workers, the same crops."""
    from homework.hw4 import main
    from tests.test_hw4 import TINY

    args = ["fit", *TINY, "--trainer.max_epochs", "2", "--trainer.logger", "false"]
    clis = [main([*args, "--data.num_workers", str(n)]) for n in (0, 2)]
    assert_same_weights(*(Path(c.trainer.checkpoint_callback.last_model_path) for c in clis))


# --- last.ckpt -------------------------------------------------------------------------------------------------
def test_last_checkpoint_is_the_newest_epoch_even_when_it_is_not_the_best():
    from homework.hw1 import main

    # "best" by the highest val_mse: the first epoch, so every later epoch is "not an improvement"
    cli = main(["fit", "--trainer.max_epochs", "6", "--checkpoint.mode", "max", "--trainer.logger", "false", *QUIET])
    last = torch.load(cli.trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=True)
    record = json.loads((cli.run_dir / "run.json").read_text())
    assert last["epoch"] == 5 and record["best_epoch"] < 5, (last["epoch"], record["best_epoch"])
    final = {k: v for k, v in cli.model.state_dict().items()}
    assert all(torch.equal(final[k], v) for k, v in last["state_dict"].items())


# --- crash and resume ------------------------------------------------------------------------------------------
KILL_AT = "tests.test_reproducibility.KillAt"


class KillAt(pl.Callback):
    """SIGKILLs its own process when a training batch starts at optimizer step `step`: no exception, no
    cleanup, exactly as a dying Colab session or the OOM killer ends a run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


# HW1's demo: 10 minibatches per epoch; with one minibatch per Lightning step, a kill at step 25 lands mid-epoch 2
KILLABLE = ["fit", *HW1_FAST, "--trainer.max_epochs", "4", "--data.minibatches_per_step", "1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The last checkpoint and record of the run that was never killed."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    hw("hw1", KILLABLE, cwd=cwd)
    (run,) = run_dirs(cwd / "runs" / "hw1")
    return run


@pytest.mark.parametrize("mid_epoch", [False, True], ids=["epoch-end-checkpoint", "every-n-steps-checkpoint"])
def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(mid_epoch, uninterrupted):
    args = KILLABLE + (["--checkpoint.save_last_every_n_train_steps", "3"] if mid_epoch else [])
    killed = hw("hw1", [*args, "--trainer.callbacks+", KILL_AT, "--trainer.callbacks.step", "25"], check=False)
    assert killed.returncode == -signal.SIGKILL
    (crashed,) = run_dirs()
    saved = torch.load(crashed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == (23 if mid_epoch else 20)  # mid-epoch saves: 3 steps after the previous one
    assert json.loads((crashed / "run.json").read_text())["status"] == "running"  # it never got to say more

    resumed = hw("hw1", ["fit", "--resume", "--trainer.callbacks", "[]", *QUIET])  # (the run's config holds KillAt)
    assert run_dirs() == [crashed]  # continued in place, no new run directory
    assert_same_weights(uninterrupted / "checkpoints" / "last.ckpt", crashed / "checkpoints" / "last.ckpt")
    record, reference = (json.loads((d / "run.json").read_text()) for d in (crashed, uninterrupted))
    assert record["status"] == "finished" and len(record["resumed"]) == 1
    assert (record["best_score"], record["best_epoch"]) == (reference["best_score"], reference["best_epoch"])
    assert resumed.stdout.strip().splitlines()[-2] == f"Run directory: {Path('runs/hw1') / crashed.name}"


def test_resume_says_what_it_cannot_do(capsys):
    from homework.hw1 import main
    from tests.conftest import user_error

    assert "no checkpoint under 'runs/hw1'" in user_error(capsys, main, ["fit", "--resume"])
    cli = main(["fit", *HW1_FAST, "--trainer.max_epochs", "2", "--trainer.logger", "false"])
    line = user_error(capsys, main, ["fit", "--resume"])
    assert f"run {cli.run_dir.name} finished (after 2 epochs); nothing to resume" in line
    assert "--trainer.max_epochs N" in line
    assert "drop --ckpt_path" in user_error(capsys, main, ["fit", "--resume", "--ckpt_path", "last"])
    assert "use it with `fit`" in user_error(capsys, main, ["predict", "--resume"])
    assert user_error(capsys, main, ["fit", "--resum"]).endswith("did you mean --resume?")
    # a run early stopping ended would only stop again: said so, whatever --trainer.max_epochs asks
    stopped = main(["fit", *HW1_FAST, "--early_stopping.mode", "max", "--early_stopping.patience", "1",
                    "--trainer.logger", "false"])
    line = user_error(capsys, main, ["fit", "--resume", str(stopped.run_dir), "--trainer.max_epochs", "20"])
    assert f"early stopping ended run {stopped.run_dir.name} after 2 of 6 epochs" in line
    # training longer in place: the same directory, epochs 2..3 added
    longer = main(["fit", "--resume", str(cli.run_dir), "--trainer.max_epochs", "4"])
    assert longer.run_dir == cli.run_dir
    assert json.loads((cli.run_dir / "run.json").read_text())["epochs"] == 4


def test_a_kill_while_a_checkpoint_is_written_leaves_the_previous_one_usable(tmp_path):
    """The checkpoint writer dies half-way through a file: the previous last.ckpt is still whole."""
    from callbacks import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    script = (f"import os, signal, torch\nfrom callbacks import AtomicCheckpointIO\n"
              f"real = torch.save\n"
              f"def dying(obj, f, *a, **k):\n"
              f"    f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
              f"torch.save = dying\nAtomicCheckpointIO().save_checkpoint({{'epoch': 2}}, {str(path)!r})\n")
    died = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert died.returncode == -signal.SIGKILL
    assert torch.load(path, weights_only=True)["epoch"] == 1
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert all(name.startswith(".last.") and ".tmp" in name for name in leftovers)  # a hidden temp file at most
