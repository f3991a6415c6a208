"""The methodology advisor: constructed underfit / overfit / healthy runs get the right verdict with their
numbers; the simple references really fit (HW1 least squares, HW2 logistic regression, HW3 majority class);
every remedy flag exists; and a fit hands the CLI the diagnosis to print."""
import inspect
import re

import pytest
import torch

from homework.lab import advisor
from homework.lab.advisor import Reference, diagnose, format_diagnosis
from tests.conftest import QUIET


def history(train: list[float], val: list[float], prefix: str = "loss") -> dict:
    return {f"train_{prefix}": list(enumerate(train)), f"val_{prefix}": list(enumerate(val))}


def decay(start: float, end: float, n: int) -> list[float]:
    return [end + (start - end) * 0.8 ** i for i in range(n)]


LINEAR = Reference("least squares on the same 116 features", "MSE", train=1.0, val=1.1, seconds=0.1)


def test_underfit_run_is_model_bias_or_optimization_with_its_numbers():
    run = history(decay(30, 0.95, 40), decay(30, 1.05, 40))  # training MSE ends within 10% of the linear model's
    d = diagnose(run, LINEAR, advisor.REMEDIES["hw1"])
    assert d.verdict == "model bias or optimization trouble"
    text = format_diagnosis(d, LINEAR)
    assert "0.95" in text and "1 (least squares" in text and "not 10% below" in text
    assert "--model.optimizer.lr" in text and "--model.hidden_dims" in text  # both kinds of remedy


def test_training_loss_above_the_simple_models_points_to_optimization():
    d = diagnose(history(decay(30, 1.6, 40), decay(30, 1.7, 40)), LINEAR, advisor.REMEDIES["hw1"])
    assert d.verdict == "optimization trouble"
    text = format_diagnosis(d)
    assert "training MSE 1.605 is above the reference's 1 " in text and "optimization, not model bias" in text
    assert "--model.batch_norm true" in text and "--model.hidden_dims" not in text


def test_overfit_run_is_overfitting_by_the_gap_and_the_turn():
    train = decay(30, 0.1, 60)
    val = [v if i <= 20 else 1.0 + 0.02 * (i - 20) for i, v in enumerate(decay(30, 1.0, 60))]  # best at 21, rising
    d = diagnose(history(train, val), LINEAR, advisor.REMEDIES["hw1"])
    assert d.verdict == "overfitting"
    text = format_diagnosis(d)
    assert "validation is 17.8x training" in text and "rose 75%" in text and "best at epoch 21 (1.02)" in text
    assert "--model.dropout 0.2" in text and "--early_stopping.patience" in text and "--data.features 16" in text


def test_validation_turning_up_is_overfitting_even_with_a_small_gap():
    train = decay(30, 0.6, 50)
    val = [v if i <= 25 else 0.8 + 0.01 * (i - 25) for i, v in enumerate(decay(30, 0.8, 50))]  # ends 1.04: 1.7x
    d = diagnose(history(train, val), LINEAR)
    assert d.verdict == "overfitting" and "rose 28%" in format_diagnosis(d) and "x training" not in format_diagnosis(d)


def test_healthy_run_says_so_with_the_gap():
    d = diagnose(history(decay(30, 0.8, 40), decay(30, 0.9, 40)), LINEAR)
    assert d.verdict == "healthy" and not d.remedies
    text = format_diagnosis(d)
    assert "gap 1.12x" in text and "clearly below the reference's 1" in text
    assert "still improving" not in text and "mismatch" not in text


def test_still_improving_at_the_end_says_train_longer():
    train = [30 / (i + 1) + 0.5 for i in range(30)]
    val = [30 / (i + 1) + 0.6 for i in range(30)]  # still falling ~10% over the last 3 epochs
    text = format_diagnosis(diagnose(history(train, val), LINEAR, advisor.REMEDIES["hw1"]))
    assert "still improving at the end" in text and "--trainer.max_epochs 1200" in text


def test_mismatch_hint_when_validation_is_off_from_the_first_epoch():
    text = format_diagnosis(diagnose(history(decay(2, 0.5, 20), decay(9, 3.0, 20)), LINEAR))
    assert "mismatch?" in text and "after the first epoch" in text
    low = format_diagnosis(diagnose(history(decay(4, 0.8, 20), decay(1, 0.3, 20)), LINEAR))
    assert "below half the training" in low


def test_classification_compares_error_rates_from_the_accuracies():
    majority = Reference("always the majority class (3)", "error rate", train=0.8, val=0.8, seconds=0.0)
    # accuracy 0.25 (error 0.75): not 10% below always-the-majority's 0.8, whatever the (smoothed) losses say
    run = {**history([0.25 - 0.2 * 0.8 ** i for i in range(20)], [0.24 - 0.2 * 0.8 ** i for i in range(20)], "acc"),
           **history([0.5] * 20, [0.6] * 20)}
    d = diagnose(run, majority, advisor.REMEDIES["hw3"])
    assert d.verdict == "model bias or optimization trouble"
    assert "training error rate 0.7529 is not 10% below the reference's 0.8" in format_diagnosis(d)
    good = {**history([0.9] * 10, [0.85] * 10, "acc")}
    assert diagnose(good, majority).verdict == "healthy"


def test_no_reference_skips_the_bias_check_and_says_so():
    d = diagnose(history(decay(9, 2.0, 10), decay(9, 2.2, 10)), None, advisor.REMEDIES["hw5"])
    assert d.verdict == "healthy" and any("model bias was not checked" in n for n in d.notes)
    assert diagnose({"train_loss": [(0, 1.0)]}, LINEAR) is None  # no validation: nothing to say


def test_hw1_least_squares_reference_really_fits():
    from datamodules.covid import CovidDataModule

    dm = CovidDataModule()  # the demo set
    dm.setup("fit")
    ref = advisor.reference_score(dm)
    assert ref.quantity == "MSE" and "116 features" in ref.name
    assert 0 < ref.train < 0.5 * float(dm.train_y.var()) and ref.val < 0.5 * float(dm.val_y.var())


def test_hw2_logistic_regression_reference_beats_chance_and_hw3_majority_is_the_commonest_class():
    from datamodules.food import FoodDataModule
    from datamodules.libriphone import LibriPhoneDataModule

    dm = LibriPhoneDataModule(concat_nframes=3)
    dm.setup("fit")
    ref = advisor.reference_score(dm)
    commonest = torch.bincount(dm.val_y).max() / len(dm.val_y)
    assert ref.quantity == "error rate" and ref.val < 1 - float(commonest) - 0.05  # above always-the-commonest
    food = FoodDataModule(num_workers=0)
    food.setup("fit")
    majority = advisor.reference_score(food)
    labels = food.train.labels
    assert majority.train == pytest.approx(1 - float(torch.bincount(labels).max()) / len(labels))


@pytest.mark.parametrize("homework", ["hw1", "hw2", "hw3", "hw4", "hw5"])
def test_every_remedy_flag_exists(homework):
    """A remedy the student cannot type is worse than none: each `--model.x` / `--data.x` names a parameter."""
    import importlib

    module = importlib.import_module(f"homework.{homework}")
    source = inspect.getsource(module)
    model = getattr(module, re.search(r"run\((\w+), (\w+)", source).group(1))
    data = getattr(module, re.search(r"run\((\w+), (\w+)", source).group(2))
    for flag in advisor.remedy_flags(homework):
        section, _, name = flag[2:].partition(".")
        name = name.split(".")[0]
        if section == "model":
            assert name in inspect.signature(model).parameters, flag
        elif section == "data":
            assert name in inspect.signature(data).parameters, flag
        else:
            assert section in ("trainer", "early_stopping"), flag


def test_after_a_fit_the_advice_uses_the_runs_own_curves():
    from homework.hw1 import main

    cli = main(["fit", "--trainer.max_epochs", "3", *QUIET])
    text = advisor.advise(cli.trainer, cli.model, cli.datamodule)
    curve = dict(advisor._history(cli.trainer)["train_loss"])
    assert text.startswith("Diagnosis (practical methodology): ")
    assert f"{curve[2]:.4g}" in text  # the run's final training MSE


@pytest.mark.slow  # ~15 s: generates and packs the HW4 demo set
def test_hw4_mean_mel_reference_beats_the_majority_class():
    from datamodules.voxceleb import VoxCelebDataModule

    dm = VoxCelebDataModule(num_workers=0)
    dm.setup("fit")
    ref = advisor.reference_score(dm)
    val_labels = dm.labels[dm.val_index]
    assert "mean mel vectors (40 features)" in ref.name
    assert ref.val < 1 - float(torch.bincount(val_labels).max()) / len(val_labels) - 0.2
