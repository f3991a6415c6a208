"""The learning curve: what it records during a fit, and that the figure shows it (panels, labels, markers)."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from callbacks import LearningCurvePlot
from homework.hw1 import main as hw1
from tests.conftest import QUIET


def classifier_curve() -> LearningCurvePlot:
    curve = LearningCurvePlot()
    for epoch in range(15):
        curve.history["train_loss"].append((epoch, 2 / (epoch + 1)))
        curve.history["val_loss"].append((epoch, 1.5 / (epoch + 1) + 0.02 * epoch))
        curve.history["train_acc"].append((epoch, 0.5 + 0.03 * epoch))
        curve.history["val_acc"].append((epoch, 0.5 + 0.04 * min(epoch, 7) - 0.005 * max(0, epoch - 7)))
        curve.lr_history += [(epoch + b / 4, 1e-3 * min(1, (4 * epoch + b + 1) / 8)) for b in range(4)]
    curve.best_epoch, curve.stopped_epoch, curve.stop_reason = 7, 14, "no better val_acc for 7 epochs"
    return curve


def vertical_lines(ax) -> set[float]:
    return {line.get_xdata()[0] for line in ax.get_lines()
            if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2}


def test_figure_has_loss_metric_and_learning_rate_panels_with_the_marked_epochs():
    curve = classifier_curve()
    fig = curve.figure(monitor="val_acc", mode="max")
    loss, metric, lr = fig.axes
    assert loss.get_ylabel() == "loss" and "train vs validation" in loss.get_title()
    assert metric.get_ylabel() == "acc" and "val_acc picks the best epoch" in metric.get_title()
    assert "higher is better" in metric.get_title()
    assert lr.get_ylabel() == "learning rate" and lr.get_xlabel().startswith("epoch (from 0; each epoch's steps")
    for ax in (loss, metric, lr):  # best epoch and early stop marked on every panel
        assert vertical_lines(ax) == {7, 14}
    (schedule,) = [line for line in lr.get_lines() if line.get_label() == "learning rate"]
    # each epoch's steps drawn around its tick, so the x axis ends half an epoch after the last epoch
    assert list(schedule.get_xdata()) == [x - 0.5 for x, _ in curve.lr_history]
    assert list(schedule.get_ydata()) == [v for _, v in curve.lr_history]
    assert loss.get_xlim()[1] == pytest.approx(14.25 + 0.02 * 14.75)
    # the best point sits on the monitored curve at the best epoch; its value is in the legend, not on the axes
    dots = [line for line in metric.get_lines() if line.get_marker() == "o" and len(line.get_xdata()) == 1]
    assert [(d.get_xdata()[0], d.get_ydata()[0]) for d in dots] == [(7, pytest.approx(0.78))]
    assert not metric.texts
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert {"train", "validation", "learning rate", "best epoch 7 (val_acc 0.78)",
            "early stop, epoch 14: no better val_acc for 7 epochs"} == set(labels)
    assert loss.get_yscale() == "linear"
    assert "train vs validation" in metric.get_title() and curve.recipe is None and "\n" not in loss.get_title()


def test_the_figure_says_its_recipe_and_a_validation_only_metric_is_titled_so():
    curve = LearningCurvePlot()
    for epoch in range(4):  # HW5: BLEU is scored on the validation split only
        curve.history["train_loss"].append((epoch, 8 - epoch))
        curve.history["val_loss"].append((epoch, 7.5 - epoch))
        curve.history["val_bleu"].append((epoch, 1 + 2 * epoch))
    curve.recipe = "AdamW lr 0.001 · InverseSqrtLR · batches of 2048 tokens"
    loss, metric = curve.figure(monitor="val_bleu", mode="max").axes
    assert loss.get_title().startswith("AdamW lr 0.001 · InverseSqrtLR · batches of 2048 tokens\nloss: ")
    assert metric.get_title().startswith("bleu on the validation split (higher is better")
    assert "train" not in metric.get_title() and loss.get_xlim()[1] < 3.1  # one value per epoch: no empty epoch


def test_losses_over_orders_of_magnitude_use_a_log_axis_and_one_panel_when_the_metric_is_the_loss(tmp_path):
    curve = LearningCurvePlot()
    for epoch in range(30):
        curve.history["train_loss"].append((epoch, 100 / (epoch + 1) ** 2))
        curve.history["val_loss"].append((epoch, 120 / (epoch + 1) ** 2 + 0.5))
        curve.history["val_mse"].append((epoch, 120 / (epoch + 1) ** 2 + 0.5))  # HW1: the loss is the metric
    fig = curve.figure(monitor="val_mse", mode="min")
    (loss,) = fig.axes  # no learning rate recorded: no lr panel; no separate panel repeating val_loss
    assert loss.get_yscale() == "log" and "val_mse" in loss.get_title()
    assert vertical_lines(loss) == {29}  # no best checkpoint recorded: the monitor's best value; no early stop
    curve.plot(tmp_path / "curve.png", monitor="val_mse")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_is_logged_to_every_logger_that_takes_images(tmp_path):
    class ImageLogger:
        def __init__(self) -> None:
            self.images = []

        def log_image(self, key, images):
            self.images.append((key, images))

    logger = ImageLogger()
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path), loggers=[object(), logger])
    classifier_curve().on_fit_end(trainer, SimpleNamespace(monitor="val_acc", mode="max"))
    assert logger.images == [("learning_curve", [str(tmp_path / "learning_curve.png")])]
    assert (tmp_path / "learning_curve.png").is_file()


def test_a_fit_records_the_schedule_the_best_epoch_and_the_early_stop():
    """HW1 with one minibatch per Lightning step: 10 learning rates per epoch, at fractional epochs."""
    cli = hw1(["fit", "--trainer.max_epochs", "40", "--early_stopping.patience", "2",
               "--data.minibatches_per_step", "1", "--model.optimizer.lr", "0.05", *QUIET])
    trainer = cli.trainer
    (curve,) = [c for c in trainer.callbacks if isinstance(c, LearningCurvePlot)]
    stopper = trainer.early_stopping_callback
    assert stopper.stopped_epoch > 0 and curve.stopped_epoch == stopper.stopped_epoch  # it did stop early
    assert "no better val_mse for 2 epochs" == curve.stop_reason
    epochs = len(curve.history["val_mse"])
    assert epochs == stopper.stopped_epoch + 1
    record_best = cli.record.record["best_epoch"]
    assert curve.best_epoch == record_best and curve.best("val_mse")[1] == pytest.approx(float(
        trainer.checkpoint_callback.best_model_score))
    xs = [x for x, _ in curve.lr_history]
    assert len(xs) == epochs * 10 and xs[:3] == [0, 0.1, 0.2] and xs == sorted(xs)
    lrs = [lr for _, lr in curve.lr_history]
    assert lrs[0] < max(lrs) <= 0.05  # warmup, then the cosine decay
    assert lrs[-1] == pytest.approx(trainer.optimizers[0].param_groups[0]["lr"], rel=0.2)
    run_dir = Path(trainer.default_root_dir)
    assert (run_dir / "learning_curve.png").is_file()
    assert curve.recipe == "AdamW lr 0.05, weight decay 0.01 · WarmupCosineLR · batch 128"
    saved = json.loads((run_dir / "learning_curve.json").read_text())  # the numbers behind it, for `diagnose`
    assert saved["history"]["val_mse"][-1] == list(curve.history["val_mse"][-1])
    assert saved["stopped_epoch"] == stopper.stopped_epoch


def test_per_class_accuracy_gives_no_percentage_to_a_class_without_validation_images():
    import numpy as np

    from callbacks.classification_plots import per_class_accuracy

    confusion = np.array([[3, 1, 0], [0, 0, 0], [0, 1, 0]])  # class 1: no image; class 2: one, wrong
    assert per_class_accuracy(confusion, ["bread", "dairy", "2x2 plate"]).splitlines() == [
        "  bread             75.0%  (4 images)",
        "  dairy                 -  (0 images)",
        "  2x2 plate          0.0%  (1 image)"]
