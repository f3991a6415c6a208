"""The methodology advisor on constructed data and runs: random labels give "nothing to learn" (and the reference
cannot memorize them), a set where a linear model is strong sets the bar for bias/optimization, an overfitting
run, an optimization failure by the lecture's size test (a bigger model, a higher training loss); advice names no
setting already in effect for any homework's default recipe; `diagnose` re-prints a run's diagnosis."""
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest
import torch

from homework import registry
from homework.lab import advisor, model_sizes, reference as simple_reference
from homework.lab.advisor import COMMON_REMEDIES, diagnose, format_diagnosis
from homework.lab.model_sizes import RunSize
from homework.lab.reference import Reference, fit_reference
from datamodules.lab_hooks import ReferenceData, advice, flatten_settings, same
from tests.conftest import QUIET, user_error

HOMEWORKS = registry.names()


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
    assert f"error rate {ref.heldout:.4g} on held-out rows, no better than always the majority class" in text
    assert f"({ref.baseline:.4g}): the labels look unpredictable from these features" in text
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
           f"{bar:.4g} (logistic regression)" in text
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
    assert "gap 1.12x" in text and "clearly below what a simple model reaches on held-out rows, 1 " in text
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
    assert ref is None and "not available for this homework (Plain has no reference_data())" in why
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
    assert "(reference: ridge regression on the network's own (selected, standardized) features" in out
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
    lines = [line for problem in ("optimization", "bias", "overfitting")
             for line in advice(problem, remedies, settings)]
    run = history([10 / (i + 1) for i in range(4)], [11 / (i + 1) for i in range(4)])  # still falling after 4 epochs
    ran = {**settings, "trainer.max_epochs": 4}  # (as if run with --trainer.max_epochs 4; above the bar: optimization)
    lines += diagnose(run, reference(1.0, 30), remedies, ran).remedies
    assert lines
    for line in lines:
        for flag, value in flags_named(line):
            key = flag[2:]
            assert key in settings, (line, flag)  # a flag the student can type
            assert not same(yaml.safe_load(value), settings[key]), f"{homework}: '{line}' repeats {key}={settings[key]}"
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
    module = importlib.import_module(f"homework.{homework}")
    model, data = module.HOMEWORK.model_class, module.HOMEWORK.datamodule_class
    for remedy in advisor.remedies_of(model, data) + COMMON_REMEDIES:
        if remedy.flag is None:
            continue
        section, _, name = remedy.flag[2:].partition(".")
        name = name.split(".")[0]
        if section == "model":
            assert name in inspect.signature(model).parameters, remedy.flag
        elif section == "data":
            assert name in inspect.signature(data).parameters, remedy.flag
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
        r"reaches on held-out rows, ([\d.]+)", text).group(1)), rel=1e-3)


@pytest.mark.slow  # ~15 s: generates and packs the HW4 demo set
def test_hw4_utterance_summary_reference_beats_the_majority_class():
    from datamodules.voxceleb import VoxCelebDataModule

    dm = VoxCelebDataModule(num_workers=0)
    dm.setup("fit")
    ref, _ = simple_reference.reference_score(dm)
    assert "mean and spread of its 40 mel bins" in ref.features and ref.num_features == 80
    assert ref.learnable and ref.heldout < ref.baseline - 0.2
