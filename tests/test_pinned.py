"""Behaviour pinned, not presence: each test here failed on a small realistic change to the code that the suite
let through (issue #24's mutation audit), the way a student would be failed silently by it."""
import json
import os
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from homework import registry, runs
from homework.lab.advisor import diagnose
from models.translation import corpus_bleu
from tests.conftest import QUIET
from tests.test_advisor import LINEAR, decay, history


# --- `--ckpt_path best` obeys "higher is better" as well as "lower is better" -----------------------------------
def fake_run(root: Path, name: str, score: float, mode: str) -> Path:
    """A run directory as `fit` leaves it (run.json and its best checkpoint), scoring `score`."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"x")
    record = {"homework": "hw2", "command": "fit", "status": "finished", "data_dir": "/data", "demo": False,
              "split": {"val_ratio": 0.2, "seed": 1}, "monitor": "val_acc", "mode": mode, "best_score": score,
              "best_epoch": 3, "best_checkpoint": "checkpoints/best.ckpt", "epochs": 4}
    (run / "run.json").write_text(json.dumps(record))
    return run


@pytest.mark.parametrize("mode, best", [("max", "high"), ("min", "low")])
def test_best_picks_the_best_score_in_the_models_direction(tmp_path, mode, best):
    fake_run(tmp_path, "high", 0.9, mode)
    time.sleep(0.01)
    fake_run(tmp_path, "low", 0.3, mode)  # the newer run: newest is no tie-breaker here
    os.utime(tmp_path / "low" / "checkpoints" / "best.ckpt")
    choice = runs.find_best(tmp_path)
    assert choice.path == (tmp_path / best / "checkpoints" / "best.ckpt").resolve()


# --- early stopping watches the model's metric in the model's direction ----------------------------------------
@pytest.mark.parametrize("homework", registry.names())
def test_early_stopping_and_checkpoints_follow_the_models_direction(capsys, homework):
    with pytest.raises(SystemExit):  # (printed, nothing trains)
        registry.module(homework).main(["fit", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    model = registry.module(homework).HOMEWORK.model_class
    assert config["early_stopping"]["monitor"] == config["checkpoint"]["monitor"] == model.monitor
    assert config["early_stopping"]["mode"] == config["checkpoint"]["mode"] == model.mode
    assert model.mode == ("min" if model.monitor.endswith(("loss", "mse", "rmse")) else "max")


# --- HW5's BLEU, against one computed by hand -------------------------------------------------------------------
def test_bleu_counts_each_chinese_character_as_a_word():
    # 6 characters, all in the 7-character reference: 1-4-gram precisions 6/6, 5/5, 4/4, 3/3, so BLEU is the
    # brevity penalty exp(1 - 7/6) = 0.8465 (x100). Without Chinese tokenization each sentence is one "word":
    # no match, BLEU 0.
    assert corpus_bleu(["今天天氣很好"], ["今天天氣很好啊"]) == pytest.approx(84.65, abs=0.01)
    assert corpus_bleu(["今天天氣很好啊"], ["今天天氣很好啊"]) == pytest.approx(100.0)


# --- the advisor's overfitting rule needs validation to rise *while training falls* -----------------------------
def test_validation_rising_while_training_stays_is_not_overfitting():
    rising = [v if i <= 25 else 0.8 + 0.01 * (i - 25) for i, v in enumerate(decay(30, 0.8, 50))]  # up 30%
    falling = decay(30, 0.75, 50)
    flat = [v if i <= 25 else falling[25] for i, v in enumerate(falling)]  # training no longer falls
    d = diagnose(history(flat, rising), LINEAR)
    assert d.verdict != "overfitting", d  # validation rose, but training did not fall: not the lecture's sign
    assert diagnose(history(falling, rising), LINEAR).verdict == "overfitting"  # the same, training falling


# --- `tune` counts pruned trials as done ------------------------------------------------------------------------
def test_a_pruned_trial_counts_toward_n_trials(capsys):
    from optuna.distributions import FloatDistribution

    from homework.hw1 import main
    from homework.lab import tune

    study_dir = Path("runs/hw1/tune_space")
    study_dir.mkdir(parents=True)
    study = optuna.create_study(study_name="space", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / tune.JOURNAL))))
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    for state in (TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED):
        study.add_trial(optuna.trial.create_trial(params={"model.optimizer.lr": 0.01}, distributions={
            "model.optimizer.lr": lr}, value=5.0 if state == TrialState.COMPLETE else None, state=state,
            intermediate_values={0: 9.0}))
    Path("space.yaml").write_text("model.optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}\n")
    args = ["tune", "--space", "space.yaml", "--trainer.max_epochs", "2", *QUIET]
    assert len(main([*args, "--n_trials", "3"]).get_trials()) == 3  # 2 complete + 1 pruned: nothing to run
    assert "has its 3 trials" in capsys.readouterr().out
    assert len(main([*args, "--n_trials", "4"]).get_trials()) == 4  # exactly one more
