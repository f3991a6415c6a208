"""The methodology advisor on constructed data and runs: random labels give "nothing to learn" (and the reference
cannot memorize them), a set where a linear model is strong sets the bar for bias/optimization, an overfitting
run, an optimization failure by the lecture's size test (a bigger model, a higher training loss); advice names no
setting already in effect for any homework's default recipe; `diagnose` re-prints a run's diagnosis."""
import importlib
import json
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import BinaryAUROC
from torchmetrics.functional.classification import binary_auroc

from callbacks import LearningCurvePlot
from homework import registry
from homework.lab import advisor, model_sizes, reference as simple_reference
from homework.lab.advisor import COMMON_REMEDIES, diagnose, format_diagnosis
from homework.lab.model_sizes import RunSize
from homework.lab.reference import Reference, fit_reference
from datamodules.lab_hooks import ReferenceData, ReferenceScore, Remedy, advice, flatten_settings, same
from tests.conftest import QUIET, user_error

HOMEWORKS = tuple(registry.names())  # every homework: a new one is covered without an edit here


def history(train: list[float], val: list[float], prefix: str = "loss") -> dict:
    return {f"train_{prefix}": list(enumerate(train)), f"val_{prefix}": list(enumerate(val))}


def errors(train: list[float], val: list[float]) -> dict:
    """A classifier's run: its accuracies from error rates (and losses that the comparison must not use)."""
    losses = history([2.0] * len(train), [2.0] * len(val))
    return {**history([1 - e for e in train], [1 - e for e in val], "acc"), **losses}


def decay(start: float, end: float, n: int) -> list[float]:
    return [end + (start - end) * 0.8 ** i for i in range(n)]


def reference(heldout: float, baseline: float, quantity: str = "MSE", rows: int = 1000) -> Reference:
    return Reference("ridge regression" if quantity == "MSE" else "logistic regression", "constructed features",
                     quantity, 0.95 * heldout, heldout, baseline, "always the training mean", 0.01,
                     rows, rows, rows // 4, rows // 4, 10, 10, False, 0.1)


LINEAR = reference(heldout=1.0, baseline=30.0)


def constructed(labels: str, n: int = 400, d: int = 100, classes: int = 2, seed: int = 0) -> ReferenceData:
    """`n` training and n/2 validation rows of `d` Gaussian features; labels random, or a linear function of the
    features (the class whose random direction scores highest) with 5% of them flipped."""
    g = torch.Generator().manual_seed(seed)
    x, xv = torch.randn(n, d, generator=g), torch.randn(n // 2, d, generator=g)
    if labels == "random":
        y, yv = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (n // 2,), generator=g)
    else:
        w = torch.randn(d, classes, generator=g)
        y, yv = (x @ w).argmax(1), (xv @ w).argmax(1)
        for t in (y, yv):
            flip = torch.rand(len(t), generator=g) < 0.05
            t[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g)
    return ReferenceData("classification", "constructed features", x, y, xv, yv, n, n // 2)


# --- random labels: nothing to learn, and a reference that cannot memorize them -------------------------
def test_random_labels_say_nothing_to_learn_and_the_reference_cannot_memorize_them():
    ref = fit_reference(constructed("random", n=2000, d=100, classes=10))
    # 100 features for 2,000 rows of 10 classes: without its L2 penalty, logistic regression learns ~15% of the
    # random labels by heart (training error ~0.74 where chance is ~0.89); with the penalty chosen on held-out
    # rows it cannot: its training error stays at the majority class's
    assert ref.train > ref.baseline - 0.03 and not ref.learnable and ref.heldout > ref.baseline - 0.03
    train, val = decay(0.9, 0.02, 30), [0.9 + 0.01 * (i % 3) for i in range(30)]  # a network memorizing them
    d = diagnose(errors(train, val), ref)
    text = format_diagnosis(d, ref)
    assert d.verdict == "nothing to learn"
    assert "optimization" not in text and "model bias" not in text and "overfitting" not in text
    assert f"reaches validation error rate {ref.heldout:.4g}, no better than always the majority class" in text
    assert f"(error rate {ref.baseline:.4g}): the labels look unpredictable from these features" in text
    assert "best validation error rate 0.9 (epoch 0) is no better either" in text
    assert f"training error rate {1 - (1 - train[-1]):.4g} comes from memorizing the training rows" in text
    assert "check that each label belongs to its input" in text and "constructed features" in text
    assert "cut to" not in text and "trained on 2,000 of 2,000 training rows, scored on 1,000 of 1,000" in text
    stuck = diagnose(errors([0.9] * 10, [0.9] * 10), ref)  # a network that learns nothing either
    assert stuck.verdict == "nothing to learn" and not any("memorizing" in e for e in stuck.evidence)


def test_a_network_that_learns_what_the_linear_reference_cannot_is_not_told_nothing_to_learn():
    ref = reference(heldout=0.5, baseline=0.5, quantity="error rate")  # (XOR-like data: linear is at chance)
    d = diagnose(errors(decay(0.5, 0.05, 20), decay(0.5, 0.08, 20)), ref)
    assert d.verdict == "healthy" and any("not linear in these features" in n for n in d.notes)


# --- a learnable set: the reference's held-out value is the bar -------------------------------------------
def test_where_a_linear_model_is_strong_its_held_out_error_is_the_bar():
    ref = fit_reference(constructed("linear", n=2000, d=10, classes=4))
    assert ref.learnable and ref.heldout < 0.15 and ref.baseline > 0.6 and abs(ref.train - ref.heldout) < 0.05
    settings = {"model.optimizer": "torch.optim.AdamW", "model.optimizer.lr": 0.002, "trainer.max_epochs": 20,
                "model.lr_scheduler": "callbacks.WarmupCosineLR", "model.hidden_dim": 128, "model.num_layers": 2,
                "model.batch_norm": True}
    from models.phoneme import PhonemeClassifier

    bar = ref.heldout
    above = diagnose(errors(decay(0.9, 0.3, 20), decay(0.9, 0.32, 20)), ref, PhonemeClassifier.remedies, settings)
    text = format_diagnosis(above, ref)
    assert above.verdict == "optimization trouble"
    assert f"training error rate {0.3 + 0.6 * 0.8 ** 19:.4g} is above what a simple model reaches on held-out rows, " \
           f"error rate {bar:.4g} (logistic regression)" in text
    assert "learning rate: --model.optimizer.lr 0.0006 or 0.006" in text
    assert "AdamW" not in text and "WarmupCosineLR" not in text and "batch_norm" not in text  # all in effect
    assert "--model.hidden_dim 256" not in text  # a bias remedy: not for a network above the bar
    near = diagnose(errors([0.95 * bar] * 20, [bar] * 20), ref, PhonemeClassifier.remedies, settings)
    assert near.verdict == "model bias or optimization trouble" and "not 10% below" in near.evidence[0]
    assert "a bigger model: --model.hidden_dim 256 --model.num_layers 3" in near.remedies
    below = diagnose(errors(decay(0.9, 0.2 * bar, 20), decay(0.9, 0.25 * bar, 20)), ref)
    assert below.verdict == "healthy" and "clearly below what a simple model reaches" in below.evidence[0]


# --- overfitting and the other shapes of a curve ----------------------------------------------------------
def test_overfit_run_is_overfitting_by_the_gap_and_the_turn_with_remedies_from_its_settings():
    from datamodules.covid import CovidDataModule
    from models.regression import CovidRegressor

    train = decay(30, 0.1, 60)
    val = [v if i <= 20 else 1.0 + 0.02 * (i - 20) for i, v in enumerate(decay(30, 1.0, 60))]  # best at 21, rising
    settings = {"model.hidden_dims": [64, 32], "model.dropout": 0.0, "model.optimizer.weight_decay": 0.01,
                "early_stopping.patience": 200, "data.features": "all", "data.val_ratio": 0.2}
    d = diagnose(history(train, val), LINEAR, advisor.remedies_of(CovidRegressor, CovidDataModule), settings)
    assert d.verdict == "overfitting"
    text = format_diagnosis(d)
    assert "validation is 17.8x training" in text and "rose 75%" in text and "best at epoch 21 (1.02)" in text
    for line in ("fewer parameters: --model.hidden_dims [32,16]", "dropout: --model.dropout 0.2",
                 "regularization: --model.optimizer.weight_decay 0.05",
                 "earlier stopping: --early_stopping.patience 100",
                 "fewer features: --data.features 16", "more training data: --data.val_ratio 0.1"):
        assert line in d.remedies


def test_validation_turning_up_is_overfitting_even_with_a_small_gap():
    train = decay(30, 0.6, 50)
    val = [v if i <= 25 else 0.8 + 0.01 * (i - 25) for i, v in enumerate(decay(30, 0.8, 50))]  # ends 1.04: 1.7x
    d = diagnose(history(train, val), LINEAR)
    assert d.verdict == "overfitting" and "rose 28%" in format_diagnosis(d) and "x training" not in format_diagnosis(d)


def test_healthy_run_says_so_with_the_gap():
    d = diagnose(history(decay(30, 0.8, 40), decay(30, 0.9, 40)), LINEAR)
    assert d.verdict == "healthy" and not d.remedies
    text = format_diagnosis(d)
    assert "gap 1.12x" in text and "clearly below what a simple model reaches on held-out rows, MSE 1 " in text
    assert "still improving" not in text and "mismatch" not in text


def test_train_longer_comes_from_the_epochs_run_not_the_config():
    train = [30 / (i + 1) + 0.5 for i in range(5)]
    val = [30 / (i + 1) + 0.6 for i in range(5)]  # still falling at the end of a 5-epoch run
    text = format_diagnosis(diagnose(history(train, val), reference(100, 1000), settings={"trainer.max_epochs": 5}))
    assert "still improving at the end" in text and "--trainer.max_epochs 10 (twice the 5 epochs run;" in text
    assert "validation MSE still fell 18.5% over the last 1 epoch(s), 8.1 -> 6.6" in text
    cut = format_diagnosis(diagnose(history(train, val), reference(100, 1000), settings={"trainer.max_epochs": 600},
                                    run_dir=Path("runs/hw1/x")))
    assert "train to the planned 600 epochs (it stopped after 5" in cut and cut.split("\n")[-1].endswith(
        "fit --resume runs/hw1/x")
    # ended by --trainer.max_time: the limit is lifted, or --resume would refuse a finished run
    timed = format_diagnosis(diagnose(history(train, val), reference(100, 1000), run_dir=Path("runs/hw1/x"),
                                      settings={"trainer.max_epochs": 600, "trainer.max_time": "00:00:08:00"}))
    assert "fit --resume runs/hw1/x --trainer.max_time null" in timed
    stuck = diagnose(history(train, val), reference(0.1, 30), settings={"early_stopping.patience": 3},
                     stopped_early=True)
    assert stuck.remedies[0].startswith("more patience: --early_stopping.patience 6 (early stopping ended the run")


def test_mismatch_hint_when_validation_is_off_from_the_first_epoch():
    text = format_diagnosis(diagnose(history(decay(2, 0.5, 20), decay(9, 3.0, 20)), LINEAR))
    assert "mismatch?" in text and "after the first epoch" in text
    low = format_diagnosis(diagnose(history(decay(4, 0.8, 20), decay(1, 0.3, 20)), LINEAR))
    assert "below half the training" in low


def test_no_reference_skips_the_bias_check_and_says_why():
    d = diagnose(history(decay(9, 2.0, 10), decay(9, 2.2, 10)), None, why_no_reference="no simple reference here")
    assert d.verdict == "healthy" and d.notes[-1] == "no simple reference here"
    assert diagnose({"train_loss": [(0, 1.0)]}, LINEAR) is None  # no validation: nothing to say

    class Plain:  # a DataModule without the hook: said, not silently off
        pass

    ref, why = simple_reference.reference_score(Plain())
    assert ref is None and why == "no simple reference model for this homework, so model bias was not checked"
    from datamodules.translation import TranslationDataModule

    assert TranslationDataModule.reference_data(object.__new__(TranslationDataModule), 10) is None  # HW5: none


# --- the lecture's size comparison ------------------------------------------------------------------------
def test_a_bigger_model_with_a_higher_training_loss_than_a_smaller_earlier_run_is_optimization():
    run = history(decay(30, 0.9, 40), decay(30, 1.0, 40))
    this = RunSize("this run", 9601, 0.9, 40)
    smaller = RunSize("2026-01-01_10-00-00_fit", 1889, 0.5, 40)
    d = diagnose(run, reference(0.5, 30), this=this, sizes=[smaller])
    text = format_diagnosis(d)
    assert d.verdict == "optimization trouble"
    assert ("this run's model (9,601 parameters) ends with training loss 0.9 after 40 epochs, higher than the "
            "smaller model of run 2026-01-01_10-00-00_fit (1,889 parameters: 0.5 after 40 epochs): a bigger model "
            "with a higher training loss points to optimization, not model bias") in text
    longer = diagnose(run, reference(5.0, 30), this=this, sizes=[RunSize("long", 1889, 0.5, 400)])
    assert longer.verdict != "optimization trouble" and any("not a fair size comparison" in n for n in longer.notes)
    fine = diagnose(run, reference(5.0, 30), this=RunSize("this run", 9601, 0.4, 40), sizes=[smaller])
    assert fine.verdict != "optimization trouble"
    assert any(n.startswith("sizes compared (same data and split; final training loss): 2026-01-01_10-00-00_fit "
                            "1,889 parameters 0.5, this run 9,601 parameters 0.4") for n in fine.notes)


def test_sizes_are_read_from_earlier_runs_of_the_same_data_and_split(tmp_path):
    def make(name: str, **record) -> Path:
        run = tmp_path / name
        run.mkdir()
        base = {"homework": "hw1", "command": "fit", "data_dir": "/d", "split": {"seed": 1}, "epochs": 10}
        (run / "run.json").write_text(json.dumps({**base, **record}))
        return run

    this = make("c_fit", parameters=900, train_loss=2.0)
    make("a_fit", parameters=100, train_loss=1.0)
    make("b_fit", parameters=100, train_loss=1.0, split={"seed": 2})  # another split: not comparable
    make("old_fit")  # an older run.json without sizes: skipped
    sizes = model_sizes.comparable_sizes(this, json.loads((this / "run.json").read_text()))
    assert sizes == [RunSize("a_fit", 100, 1.0, 10)]


def test_diagnose_names_the_smaller_earlier_run_after_two_real_fits(capsys):
    """HW1: a small MLP trained normally, then a bigger one with a learning rate too small to move it."""
    from homework.hw1 import main

    main(["fit", "--trainer.max_epochs", "6", "--model.hidden_dims", "[8]", *QUIET])
    main(["fit", "--trainer.max_epochs", "6", "--model.optimizer.lr", "1e-6", *QUIET])
    small, big = sorted(Path("runs/hw1").iterdir())
    records = [json.loads((run / "run.json").read_text()) for run in (small, big)]
    assert records[0]["parameters"] < records[1]["parameters"] == 9601
    assert records[1]["train_loss"] > records[0]["train_loss"] and "reference" not in records[1]  # --diagnose false
    capsys.readouterr()
    main(["diagnose"])  # the newest run, its reference fitted again from its config
    out = capsys.readouterr().out
    assert out.startswith(f"Run runs/hw1/{big.name} (finished, 6 epochs)\nDiagnosis (practical methodology): "
                          f"optimization trouble\n")
    assert f"higher than the smaller model of run {small.name} ({records[0]['parameters']:,} parameters" in out
    assert "(simple reference: ridge regression on the network's own (selected, standardized) features" in out
    main(["diagnose", str(small)])
    assert capsys.readouterr().out.startswith(f"Run {small} (finished, 6 epochs)")
    assert "does not exist" in user_error(capsys, main, ["diagnose", "runs/hw1/nothing"])
    assert "takes one run directory" in user_error(capsys, main, ["diagnose", str(small), str(big)])


def test_diagnose_without_runs_is_one_line(capsys):
    from homework.hw1 import main

    assert "no run of `fit` under 'runs/hw1'" in user_error(capsys, main, ["diagnose"])


# --- advice from the run's own settings, for every homework's default recipe --------------------------------
def default_settings(homework: str, capsys) -> dict:
    """The homework's default recipe as the CLI resolves it (`fit --print_config`), flattened."""
    import yaml

    module = importlib.import_module(f"homework.{homework}")
    with pytest.raises(SystemExit):
        module.main(["fit", "--print_config"])
    return flatten_settings(yaml.safe_load(capsys.readouterr().out))


def flags_named(line: str) -> list[tuple[str, str]]:
    """(`--flag`, value) for each value a line of advice proposes ("--x 1 or 2": both)."""
    return [(flag, value) for flag, values in re.findall(r"(--[\w.]+) ((?:[^\s(]+)(?: or [^\s(]+)*)", line)
            for value in values.split(" or ")]


@pytest.mark.parametrize("homework", HOMEWORKS)
def test_no_advice_names_a_setting_already_in_effect_in_the_default_recipe(homework, capsys):
    import yaml

    settings = default_settings(homework, capsys)
    module = importlib.import_module(f"homework.{homework}")
    model, data = module.HOMEWORK.model_class, module.HOMEWORK.datamodule_class
    remedies = advisor.remedies_of(model, data) + COMMON_REMEDIES
    lines = [(line, settings) for problem in ("optimization", "bias", "overfitting")
             for line in advice(problem, remedies, settings)]
    run = history([10 / (i + 1) for i in range(4)], [11 / (i + 1) for i in range(4)])  # still falling after 4 epochs
    ran = {**settings, "trainer.max_epochs": 4}  # (as if run with --trainer.max_epochs 4; above the bar: optimization)
    lines += [(line, ran) for line in diagnose(run, reference(1.0, 30), remedies, ran).remedies]
    assert lines
    for line, used in lines:  # (each line against the settings it was advised for)
        for flag, value in flags_named(line):
            key = flag[2:]
            assert key in used, (line, flag)  # a flag the student can type
            assert not same(yaml.safe_load(value), used[key]), f"{homework}: '{line}' repeats {key}={used[key]}"
    lines = [line for line, _ in lines]
    text = "\n".join(lines)
    assert "--trainer.max_epochs 8 (twice the 4 epochs run" in text
    assert ("AdamW" in text) == (settings["model.optimizer"] not in advisor_adaptive())
    assert "WarmupCosineLR" not in text  # every default recipe warms up (HW5: InverseSqrtLR)


def advisor_adaptive() -> tuple:
    from models.base import ADAPTIVE_OPTIMIZERS

    return ADAPTIVE_OPTIMIZERS


@pytest.mark.parametrize("homework", HOMEWORKS)
def test_every_remedy_flag_exists(homework):
    """A remedy the student cannot type is worse than none: each `--model.x` / `--data.x` names a parameter."""
    from jsonargparse import ArgumentParser

    module = importlib.import_module(f"homework.{homework}")
    model, data = module.HOMEWORK.model_class, module.HOMEWORK.datamodule_class
    options = set()
    for section, cls in (("model", model), ("data", data)):  # as the CLI reads them (**kwargs followed to a parent)
        parser = ArgumentParser()
        parser.add_class_arguments(cls, section)
        options |= {"--" + ".".join(key.split(".")[:2]) for key in parser.get_defaults().keys()}
    for remedy in advisor.remedies_of(model, data) + COMMON_REMEDIES:
        if remedy.flag is None:
            continue
        section, _, name = remedy.flag[2:].partition(".")
        if section in ("model", "data"):
            assert f"--{section}.{name.split('.')[0]}" in options, remedy.flag
        else:
            assert section in ("trainer", "early_stopping"), remedy.flag


# --- the references each homework gives ---------------------------------------------------------------
def test_hw1_ridge_reference_really_fits():
    from datamodules.covid import CovidDataModule

    dm = CovidDataModule()  # the demo set
    dm.setup("fit")
    ref, _ = simple_reference.reference_score(dm)
    assert ref.quantity == "MSE" and ref.num_features == 116 and ref.learnable
    assert 0 < ref.heldout < 0.1 * ref.baseline and ref.train <= 1.2 * ref.heldout


def test_hw2_reference_at_51_frames_is_capped_grouped_and_fast_and_hw3_thumbnails_beat_the_majority():
    from datamodules.food import FoodDataModule
    from datamodules.libriphone import LibriPhoneDataModule

    dm = LibriPhoneDataModule(concat_nframes=51)
    dm.setup("fit")
    ref, _ = simple_reference.reference_score(dm)
    assert ref.num_features == 51 * 39 and ref.components < ref.num_features and ref.grouped
    assert ref.learnable and ref.heldout < ref.baseline - 0.1 and ref.seconds < 60  # (seconds on a quiet CPU)
    food = FoodDataModule(num_workers=0)
    food.setup("fit")
    thumbnails, _ = simple_reference.reference_score(food)
    assert thumbnails.learnable and thumbnails.heldout < thumbnails.baseline - 0.3


def test_after_a_fit_the_advice_uses_the_runs_own_curves_and_keeps_the_reference():
    from homework.hw1 import main

    cli = main(["fit", "--trainer.max_epochs", "3", *QUIET])
    text = advisor.advise(cli.trainer, cli.model, cli.datamodule, cli.record)
    curve = dict(advisor._curve(cli.trainer).history["train_loss"])
    assert text.startswith("Diagnosis (practical methodology): ")
    assert f"{curve[2]:.4g}" in text  # the run's final training MSE
    assert "--model.optimizer torch.optim.AdamW" not in text and "--data.normalize" not in text  # in effect
    record = json.loads((cli.run_dir / "run.json").read_text())
    assert Reference.from_dict(record["reference"]).heldout == pytest.approx(float(re.search(
        r"reaches on held-out rows, MSE ([\d.]+)", text).group(1)), rel=1e-3)


@pytest.mark.slow  # ~15 s: generates and packs the HW4 demo set
def test_hw4_utterance_summary_reference_beats_the_majority_class():
    from datamodules.voxceleb import VoxCelebDataModule

    dm = VoxCelebDataModule(num_workers=0)
    dm.setup("fit")
    ref, _ = simple_reference.reference_score(dm)
    assert "mean and spread of its 40 mel bins" in ref.features and ref.num_features == 80
    assert ref.learnable and ref.heldout < ref.baseline - 0.2


# --- evidence first: how much a diagnosis rests on, and no verdict from noise ----------------------------------
#: HW4's demo fit (default recipe, 20 epochs, 48 validation utterances): (train_acc, train_loss, val_acc, val_loss)
HW4_DEMO = [(0.04167, 10.26, 0.0625, 9.164), (0.1319, 8.979, 0.2292, 8.43), (0.2546, 8.137, 0.3125, 7.752),
            (0.412, 7.21, 0.375, 7.245), (0.4421, 6.857, 0.3542, 7.3), (0.4699, 6.564, 0.4167, 6.508),
            (0.5093, 6.225, 0.4792, 6.775), (0.544, 6.02, 0.5417, 6.171), (0.5579, 5.927, 0.4583, 6.065),
            (0.6273, 5.307, 0.5833, 5.692), (0.6481, 5.004, 0.6458, 5.299), (0.7014, 4.521, 0.6667, 4.541),
            (0.7106, 4.38, 0.7083, 4.521), (0.7431, 3.857, 0.6667, 4.601), (0.7755, 3.57, 0.7083, 4.257),
            (0.7847, 3.409, 0.7708, 3.824), (0.8079, 3.234, 0.7708, 3.95), (0.8125, 3.187, 0.7292, 3.774),
            (0.8148, 3.163, 0.7917, 3.818), (0.8333, 3.106, 0.7708, 3.805)]
HW4_SETTINGS = {"model.optimizer": "torch.optim.AdamW", "model.optimizer.lr": 0.001,
                "model.optimizer.weight_decay": 0.01, "model.lr_scheduler": "callbacks.WarmupCosineLR",
                "model.dropout": 0.1, "model.num_layers": 2, "model.d_model": 80, "data.segment_len": 128,
                "trainer.max_epochs": 20, "early_stopping.patience": 5}
STUDENT_WORDS = re.compile(r"(?<![.\w])[A-Z][a-z]+[A-Z]\w*|\w\(\)")  # a class name (not an option's value) or a call


def hw4_demo() -> dict:
    columns = list(zip(*HW4_DEMO))
    return {name: list(enumerate(values)) for name, values in zip(("train_acc", "train_loss", "val_acc", "val_loss"),
                                                                   columns)}


def hw4_remedies():
    from datamodules.voxceleb import VoxCelebDataModule
    from models.speaker import SpeakerClassifier

    return advisor.remedies_of(SpeakerClassifier, VoxCelebDataModule)


def test_the_hw4_demo_fit_is_not_overfitting_from_one_utterance_and_gets_no_advice_that_pulls_two_ways():
    """The demo's validation error rose 0.2083 -> 0.2292 in its last epoch: one utterance of 48. It once gave
    "earlier stopping: --early_stopping.patience 3" and "train longer: --trainer.max_epochs 40" together."""
    ref = reference(0.375, 0.97, "error rate", rows=192)
    d = diagnose(hw4_demo(), ref, hw4_remedies(), HW4_SETTINGS, monitor="val_acc", mode="max", val_samples=48)
    text = format_diagnosis(d, ref)
    assert d.verdict == "healthy" and not d.remedies
    assert d.basis[0] == ("based on 20 validated epochs and 48 validation samples (there a validation error rate "
                          "near 0.21 moves by up to 0.12 by chance: two standard errors)")
    assert d.basis[1] == ("the checkpoint's metric: val_acc (higher is better), best 0.7917 at epoch 18; the curves "
                          "below are error rates, 1 - accuracy (lower is better)")
    assert "within the noise of 48 validation samples: no firm sign that more epochs would help" in text
    assert "earlier stopping" not in text and "train longer" not in text
    assert not STUDENT_WORDS.search(text.replace(ref.how(), ""))
    # without the validation size the same turn counts, and then it is overfitting and nothing says train longer
    unsized = diagnose(hw4_demo(), ref, hw4_remedies(), HW4_SETTINGS, monitor="val_acc", mode="max")
    assert unsized.verdict == "overfitting" and "earlier stopping: --early_stopping.patience 3" in unsized.remedies
    assert not any("train" in line and "longer" in line for line in unsized.notes)
    assert advisor.conflicts(unsized.remedies + unsized.notes, HW4_SETTINGS) == []


def test_conflicts_are_found_by_knob_and_direction():
    settings = {"early_stopping.patience": 6, "model.num_layers": 2, "model.optimizer.lr": 0.001}
    pair = ["earlier stopping: --early_stopping.patience 3", "train longer: --trainer.max_epochs 40 (twice ...)"]
    assert advisor.conflicts(pair, settings) == [tuple(pair)]
    assert advisor.conflicts(["a bigger model: --model.num_layers 3", "fewer parameters: --model.num_layers 1"],
                             settings)
    # the last guard: a note that pulls against the verdict's remedies is dropped, the others kept
    notes = ["still improving at the end: train longer: --trainer.max_epochs 40", "mismatch? ..."]
    assert advisor._without_conflicts(pair[:1], notes, settings) == (pair[:1], ["mismatch? ..."])
    # one remedy's alternatives are a choice, not a contradiction; different knobs never conflict
    assert not advisor.conflicts(["learning rate: --model.optimizer.lr 0.0003 or 0.003",
                                  "a bigger model: --model.num_layers 3", "dropout: --model.dropout 0.2"], settings)


def curve_shapes(n: int):
    """Training/validation curves of many shapes (falling, flat, turning, noisy, gapped), as error rates."""
    falling = decay(0.9, 0.1, n)
    shapes = {"falling": (falling, decay(0.9, 0.15, n)),
              "gap": (decay(0.9, 0.02, n), decay(0.9, 0.3, n)),
              "turned": (falling, [v if i < n // 2 else falling[n // 2] * (1 + 0.05 * (i - n // 2))
                                   for i, v in enumerate(decay(0.9, 0.15, n))]),
              "flat": ([0.6] * n, [0.62] * n),
              "noisy": (falling, [v + 0.04 * (-1) ** i for i, v in enumerate(decay(0.9, 0.2, n))]),
              "late best": (falling, [*decay(0.9, 0.3, n - 1), 0.2])}
    return shapes.items()


@pytest.mark.parametrize("homework", HOMEWORKS)
def test_no_diagnosis_pulls_one_knob_two_ways_for_any_curve_or_reference(homework, capsys):
    settings = default_settings(homework, capsys)
    module = importlib.import_module(f"homework.{homework}")
    remedies = advisor.remedies_of(module.HOMEWORK.model_class, module.HOMEWORK.datamodule_class)
    seen = set()
    for n in (2, 4, 12, 40):
        for shape, (train, val) in curve_shapes(n):
            for ref in (None, reference(0.05, 0.9, "error rate"), reference(0.5, 0.9, "error rate")):
                for samples, stopped in ((None, False), (48, False), (100_000, True)):
                    ran = {**settings, "trainer.max_epochs": n}  # (the settings the run had, for both)
                    d = diagnose(errors(train, val), ref, remedies, ran,
                                 stopped_early=stopped, monitor="val_acc", mode="max", val_samples=samples)
                    seen.add(d.verdict)
                    lines = d.remedies + d.notes
                    assert advisor.conflicts(lines, ran) == [], (shape, n, lines)
                    assert not STUDENT_WORDS.search(format_diagnosis(d)), format_diagnosis(d)
    assert {"too early to tell", "healthy", "overfitting", "optimization trouble"} <= seen


def test_fewer_than_three_epochs_give_no_verdict_only_train_longer():
    d = diagnose(errors([0.5, 0.3], [0.5, 0.6]), reference(0.4, 0.9, "error rate"), settings={"trainer.max_epochs": 2})
    assert d.verdict == "too early to tell" and d.remedies == ["train longer: --trainer.max_epochs 4 (then the curves "
                                                                "can be read)"]
    assert d.evidence[0].startswith("only 2 validated epochs: fewer than 3 say nothing firm")
    stopped = diagnose(errors([0.5], [0.6]), None, settings={"early_stopping.patience": 1}, stopped_early=True)
    assert stopped.remedies[0].startswith("more patience: --early_stopping.patience 3")
    assert stopped.notes == ["no simple reference model for this homework, so model bias was not checked"]
    three = diagnose(errors([0.5, 0.3, 0.2], [0.5, 0.4, 0.3]), reference(0.4, 0.9, "error rate"))
    assert three.verdict != "too early to tell"


# --- every clause of each rule ---------------------------------------------------------------------------------
TURN_TRAIN = decay(30, 0.6, 50)
TURN_VAL = [v if i <= 25 else 0.8 + 0.01 * (i - 25) for i, v in enumerate(decay(30, 0.8, 50))]  # best at 25, +28%


def test_overfitting_by_the_turn_needs_training_to_have_fallen_meanwhile():
    assert diagnose(history(TURN_TRAIN, TURN_VAL), LINEAR).verdict == "overfitting"
    # the same validation curve while the training loss *rose* after epoch 25: not overfitting (both got worse)
    rising = [v if i <= 25 else TURN_TRAIN[25] + 0.01 * (i - 25) for i, v in enumerate(TURN_TRAIN)]
    far = reference(5.0, 30)  # (a bar well above both curves: only the overfitting rule is in question)
    assert diagnose(history(TURN_TRAIN, TURN_VAL), far).verdict == "overfitting"
    d = diagnose(history(rising, TURN_VAL), far)
    assert d.verdict == "healthy" and "rose" not in format_diagnosis(d)


def test_overfitting_by_the_turn_needs_a_rise_of_ten_percent_beyond_noise_after_the_best_epoch():
    small = [v if i <= 25 else 0.8 + 0.003 * (i - 25) for i, v in enumerate(decay(30, 0.8, 50))]  # +9% by the end
    assert diagnose(history(TURN_TRAIN, small), LINEAR).verdict == "healthy"
    at_end = [*TURN_VAL[:-1], 0.7]  # the best epoch is the last: nothing turned
    assert diagnose(history(TURN_TRAIN, at_end), LINEAR).verdict == "healthy"
    # as error rates: 0.20 -> 0.24 is +20%, a turn on 10,000 validation samples but noise on 50
    train, val = decay(0.9, 0.15, 30), [*decay(0.9, 0.2, 20), *[0.2 + 0.004 * i for i in range(1, 11)]]  # (gap 1.6x)
    val[19] = 0.19
    big = diagnose(errors(train, val), None, settings={"early_stopping.patience": 10}, val_samples=10_000)
    assert big.verdict == "overfitting" and "earlier stopping" in " ".join(big.remedies)
    assert diagnose(errors(train, val), None, val_samples=50).verdict == "healthy"


def test_overfitting_by_the_gap_needs_twice_the_training_value_beyond_noise_and_then_no_earlier_stopping():
    train = decay(0.9, 0.01, 30)
    gap = diagnose(errors(train, decay(0.9, 0.3, 30)), None, settings={"early_stopping.patience": 10})
    assert gap.verdict == "overfitting" and "validation is" in gap.evidence[-1]
    # still falling to the end: "earlier stopping" would pull against it
    assert not any(line.startswith("earlier stopping") for line in gap.remedies)
    below = diagnose(errors(decay(0.9, 0.2, 30), decay(0.9, 0.38, 30)), None)  # 1.9x
    assert below.verdict == "healthy" and "gap 1.89x (overfitting from 2x)" in format_diagnosis(below)
    tiny = [(0.9, 0.9), *[(0.01, 0.021)] * 9]  # 0.021 vs 0.01 is one sample of 48
    train_t, val_t = zip(*tiny)
    assert diagnose(errors(list(train_t), list(val_t)), None, val_samples=48).verdict == "healthy"
    assert diagnose(errors(list(train_t), list(val_t)), None, val_samples=100_000).verdict == "overfitting"


def test_still_improving_needs_the_best_epoch_at_the_end_and_a_gain_beyond_noise():
    train, val = decay(0.9, 0.1, 20), decay(0.9, 0.15, 20)
    settings = {"trainer.max_epochs": 20}
    firm = format_diagnosis(diagnose(errors(train, val), None, settings=settings, val_samples=100_000))
    assert "still improving at the end (best epoch 19 of 20): train longer: --trainer.max_epochs 40" in firm
    assert "validation error rate still fell" in firm
    noisy = format_diagnosis(diagnose(errors(train, val), None, settings=settings, val_samples=48))
    assert "train longer" not in noisy and "within the noise of 48 validation samples" in noisy
    earlier = [*val[:15], *[val[14] + 0.001 * i for i in range(1, 6)]]  # best at 14, flat after
    assert "improv" not in format_diagnosis(diagnose(errors(train, earlier), None, settings=settings))


def test_the_bias_rules_name_the_metric_of_every_number():
    ref = reference(0.4, 0.9, "error rate")
    above = diagnose(errors(decay(0.9, 0.5, 20), decay(0.9, 0.5, 20)), ref)
    assert above.verdict == "optimization trouble"
    assert above.evidence[0] == ("training error rate 0.5058 is above what a simple model reaches on held-out rows, "
                                 "error rate 0.4 (logistic regression)")
    near = diagnose(errors(decay(0.9, 0.37, 20), decay(0.9, 0.4, 20)), ref)
    assert near.verdict == "model bias or optimization trouble" and "is not 10% below" in near.evidence[0]
    assert diagnose(errors(decay(0.9, 0.3, 20), decay(0.9, 0.35, 20)), ref).verdict == "healthy"


def test_the_simple_reference_validating_better_is_said_in_error_rate_and_accuracy_and_suggests_no_features():
    """HW3: the note once gave error rates beside "Best val_acc = 0.6455" without saying so, and "fewer features"
    for images."""
    from datamodules.food import FoodDataModule
    from models.classifier import ImageClassifier

    ref = reference(0.2303, 0.9, "error rate", rows=4000)
    train, val = decay(0.9, 0.1, 30), [*decay(0.9, 0.3545, 28), 0.37, 0.38]
    d = diagnose(errors(train, val), ref, advisor.remedies_of(ImageClassifier, FoodDataModule),
                 monitor="val_acc", mode="max", val_samples=1000)
    text = format_diagnosis(d)
    note = next(n for n in d.notes if n.startswith("the simple reference validates better"))
    assert (f"validation error rate 0.2303 (logistic regression) vs {val[27]:.4g} (epoch 27); val_acc 0.7697 vs "
            f"{1 - val[27]:.4g}" in note)
    assert "features" not in text and "submission" not in text
    assert f"best {1 - val[27]:.4g} at epoch 27" in d.basis[1]


def test_every_remedy_is_an_option_the_student_can_pass():
    """No advice in words only ("more data (or augmentation)") where the homework has no option for it."""
    for homework in HOMEWORKS:
        module = importlib.import_module(f"homework.{homework}")
        for remedy in advisor.remedies_of(module.HOMEWORK.model_class, module.HOMEWORK.datamodule_class) \
                + COMMON_REMEDIES:
            assert remedy.flag is not None and remedy.flag.startswith("--"), (homework, remedy.what)


# --- the checkpoint's own metric, and the references a homework scores itself ----------------------------------
def auroc_run(val_auroc: list[float], n: int | None = None) -> dict:
    """A run whose checkpoint is picked by val_auroc (higher is better): losses fall, val_auroc as given."""
    n = n or len(val_auroc)
    return {**history(decay(1.0, 0.2, n), decay(1.0, 0.25, n)), "val_auroc": list(enumerate(val_auroc))}


PCA = ReferenceScore("PCA reconstruction error (64 components)", "val_auroc", 0.7)


def test_a_higher_is_better_metric_is_the_one_read_for_best_still_improving_and_turned():
    rising = [0.5 + 0.3 * (1 - 0.9 ** i) for i in range(20)]  # still rising at the end
    d = diagnose(auroc_run(rising), None, settings={"trainer.max_epochs": 20}, monitor="val_auroc", mode="max")
    text = format_diagnosis(d)
    assert d.basis[1] == f"the checkpoint's metric: val_auroc (higher is better), best {rising[19]:.4g} at epoch 19"
    assert "still improving at the end (best epoch 19 of 20): train longer: --trainer.max_epochs 40" in text
    assert (f"val_auroc still rose {rising[19] / rising[17] - 1:.1%} over the last 2 epoch(s), {rising[17]:.4g} -> "
            f"{rising[19]:.4g}") in text
    turned = [*rising[:10], *[rising[9] * (1 - 0.03 * i) for i in range(1, 11)]]  # best at 9, 30% worse by the end
    t = diagnose(auroc_run(turned), None, monitor="val_auroc", mode="max")
    assert t.verdict == "overfitting"
    assert f"val_auroc was best at epoch 9 ({rising[9]:.4g}) and ended 30% worse" in format_diagnosis(t)
    # the losses alone (still falling) show nothing: without the monitor the run looks healthy
    assert diagnose(auroc_run(turned), None).verdict == "healthy"
    flat = {**auroc_run(turned), "train_loss": [(e, 0.5 + 0.01 * e) for e in range(20)]}  # training rose meanwhile
    assert diagnose(flat, None, monitor="val_auroc", mode="max").verdict == "healthy"
    mild = [*rising[:10], *[rising[9] * (1 - 0.009 * i) for i in range(1, 11)]]  # 9% worse: not a turn
    assert diagnose(auroc_run(mild), None, monitor="val_auroc", mode="max").verdict == "healthy"


def test_a_reference_the_homework_scores_itself_is_compared_in_its_metric():
    good = [0.5 + 0.3 * (1 - 0.7 ** i) for i in range(20)]  # best 0.7997
    d = diagnose(auroc_run(good), None, monitor="val_auroc", mode="max", score=PCA)
    text = format_diagnosis(d, score=PCA)
    assert d.verdict == "healthy"
    assert ("the homework's reference, PCA reconstruction error (64 components), reaches val_auroc 0.7; the "
            "network's best 0.7997 (epoch 19) beats it") in text
    assert "no simple reference" not in text  # the homework's own reference is one: no "no reference" line
    assert "(the homework's reference: PCA reconstruction error (64 components), val_auroc 0.7 on the validation " \
           "split, a baseline)" in text
    poor = [0.5 + 0.15 * (1 - 0.7 ** i) for i in range(20)]  # best 0.6498: no better than PCA
    p = diagnose(auroc_run(poor), None, remedies=hw4_remedies(), settings=HW4_SETTINGS, monitor="val_auroc",
                 mode="max", score=PCA)
    assert p.verdict == "model bias or optimization trouble"
    assert p.evidence[-1] == ("its best val_auroc 0.6498 (epoch 19) does not beat the reference PCA reconstruction "
                              "error (64 components), val_auroc 0.7: the network is no better than a simple model yet")
    assert "a bigger model: --model.d_model 160 --model.num_layers 4" in p.remedies
    other = diagnose(auroc_run(good), None, monitor="val_auroc", mode="max",
                     score=ReferenceScore("PCA", "val_aupr", 0.5))
    assert any("scored in val_aupr, not in the checkpoint's metric val_auroc, so it was not compared" in n
               for n in other.notes)


def test_a_ceiling_is_reported_as_the_gap_to_it_and_never_as_a_bar_to_beat():
    teacher = ReferenceScore("the teacher (ResNet-18)", "val_acc", 0.90, ceiling=True)
    train, val = decay(0.9, 0.1, 20), decay(0.9, 0.18, 20)  # val_acc up to 0.82
    d = diagnose(errors(train, val), None, monitor="val_acc", mode="max", score=teacher)
    text = format_diagnosis(d, score=teacher)
    assert d.verdict == "healthy"
    best = 1 - val[-1]
    assert (f"the ceiling: the teacher (ResNet-18) reaches val_acc 0.9; the network's best is {best:.4g} (epoch 19), "
            f"{0.9 - best:.4g} short of it") in text
    assert "a ceiling)" in text
    assert "no simple reference model for this homework, so model bias was not checked" in d.notes  # one line
    weak = diagnose(errors(train, decay(0.9, 0.5, 20)), None, monitor="val_acc", mode="max", score=teacher)
    assert weak.verdict != "model bias or optimization trouble"  # a ceiling is not a baseline


class Detector(pl.LightningModule):
    """A fake homework's task: an anomaly score from a small network, its checkpoint picked by val_auroc."""

    monitor, mode = "val_auroc", "max"
    remedies = (Remedy("bias", "a bigger model", "--model.hidden", times=2),)

    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        self.auroc = BinaryAUROC()

    def step(self, batch):
        x, y = batch
        logit = self.net(x).squeeze(1)
        return logit, torch.nn.functional.binary_cross_entropy_with_logits(logit, y.float())

    def training_step(self, batch, _):
        loss = self.step(batch)[1]
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        logit, loss = self.step(batch)
        self.auroc.update(logit, batch[1])
        self.log("val_loss", loss)
        self.log("val_auroc", self.auroc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class Faces(pl.LightningDataModule):
    """A fake homework's data: normal points near the origin, anomalies farther out; its own reference is the
    distance from the training mean, scored in val_auroc like the task."""

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(400, 2, generator=g)
        y = (torch.rand(400, generator=g) < 0.3).long()
        self.x, self.y = x * (1 + 1.5 * y[:, None]), y

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x[:300], self.y[:300]), batch_size=32, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x[300:], self.y[300:]), batch_size=32)

    def reference_score(self, max_samples: int) -> ReferenceScore:
        distance = (self.x[300:] - self.x[:300].mean(0)).norm(dim=1)
        return ReferenceScore("distance from the training mean", "val_auroc",
                              float(binary_auroc(distance, self.y[300:])))


class Record:
    """What the CLI's run record offers the advisor: its values so far, and `add`."""

    def __init__(self) -> None:
        self.record = {"command": "fit", "status": "finished", "monitor": "val_auroc", "mode": "max"}

    def add(self, trainer, **values) -> None:
        self.record.update(values)


def test_after_a_real_fit_of_a_fake_task_the_advice_reads_its_metric_and_its_own_reference(tmp_path):
    run_dir = tmp_path / "runs" / "fake" / "a_fit"
    model, data, record = Detector(), Faces(), Record()
    trainer = pl.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=run_dir, callbacks=[LearningCurvePlot()],
                         enable_checkpointing=False)  # (the curve is what is read; no checkpoint needed)
    trainer.fit(model, data)
    text = advisor.advise(trainer, model, data, record)
    best = max(float(v) for _, v in advisor._curve(trainer).history["val_auroc"])
    score = data.reference_score(100)
    assert text.startswith("Diagnosis (practical methodology): ")
    assert ("  based on 4 validated epochs and 100 validation samples (how far val_auroc moves by chance is not "
            "known here: a small change between epochs may be noise)\n") in text
    assert f"the checkpoint's metric: val_auroc (higher is better), best {best:.4g}" in text
    assert f"distance from the training mean, val_auroc {score.score:.4g}" in text
    assert "no simple reference" not in text and not STUDENT_WORDS.search(text)
    assert record.record["reference_score"] == {"model": "distance from the training mean", "monitor": "val_auroc",
                                                "score": score.score, "ceiling": False}
    assert record.record["val_samples"] == 100 and record.record["reference"] is None
    # `diagnose` later reads the same back from run.json, without scoring it again
    (run_dir / "run.json").write_text(json.dumps({**record.record, "epochs": 4}))
    (run_dir / "config.yaml").write_text("model:\n  hidden: 4\n")  # (the settings the advice derives from)
    again = advisor.diagnose_run(run_dir, Detector, None)
    assert again.split("\n", 1)[1] == text
    # a run.json from before the hook: the homework's reference is scored again on the run's data
    older = {k: v for k, v in record.record.items() if k != "reference_score"}
    (run_dir / "run.json").write_text(json.dumps({**older, "epochs": 4}))
    assert "distance from the training mean, val_auroc" not in advisor.diagnose_run(run_dir, Detector, None)
    assert advisor.diagnose_run(run_dir, Detector, Faces).split("\n", 1)[1] == text


def test_a_run_stopped_before_its_planned_epochs_is_told_how_to_finish_it_whatever_the_trend():
    """Killed after 15 of 20 epochs with a flat end: no "still improving", but the planned epochs are not run."""
    train, val = decay(0.9, 0.1, 15), [*[0.15 + 0.75 * 0.5 ** i for i in range(13)], 0.152, 0.1505]  # best at 12
    d = diagnose(errors(train, val), None, settings={"trainer.max_epochs": 20}, run_dir=Path("runs/hw3/x"))
    assert ("train to the planned 20 epochs (the run stopped after 15, before its planned end): fit --resume "
            "runs/hw3/x") in d.notes
    assert not any("improving" in n for n in d.notes)
    done = diagnose(errors(train, val), None, settings={"trainer.max_epochs": 15})
    assert not any("planned" in n for n in done.notes)
    stopped = diagnose(errors(train, val), None, settings={"trainer.max_epochs": 20}, stopped_early=True)
    assert not any("planned" in n for n in stopped.notes)  # early stopping ended it: that is its planned end


def test_validation_samples_counts_samples_not_batches_or_blocks():
    """The noise the advisor allows shrinks with the validation size, so it must count samples: a loader of
    samples, one whose sampler makes the batches (HW2, HW4), and one whose items are whole blocks (HW8), each
    limited by --trainer.limit_val_batches."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, Dataset

    from datamodules.base import MinibatchSampler, TensorBatchDataset

    class Blocks(Dataset):  # 4 items of 250 images each
        num_samples = 1000

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(250, 1)

    samples = DataLoader(torch.utils.data.TensorDataset(torch.zeros(100, 1)), batch_size=10)
    sampled = DataLoader(TensorBatchDataset(torch.zeros(100, 1)), sampler=MinibatchSampler(100, 16, False),
                         batch_size=None)
    blocks = DataLoader(Blocks(), batch_size=None)
    for loader, used, expected in ((samples, 3, 30), (samples, 10, 100), (sampled, 2, 32), (sampled, 7, 100),
                                   (blocks, 1, 250), (blocks, 4, 1000)):
        trainer = SimpleNamespace(val_dataloaders=loader, num_val_batches=[used])
        assert advisor.validation_samples(trainer) == expected, (loader.dataset, used)
    trainer = SimpleNamespace(val_dataloaders=[samples, blocks], num_val_batches=[3, 2])
    assert advisor.validation_samples(trainer) == 30 + 500
