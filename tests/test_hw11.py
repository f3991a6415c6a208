"""HW11 on a tiny set in the course's layout: the gradient reversal, the lambda schedule, a step that sees both
domains, the label-free validation, bad input as one line, and fit -> predict from a checkpoint alone."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import torch
import torch.nn.functional as F
from PIL import Image

from callbacks import validate_submission
from datamodules.errors import DataError
from datamodules.real_or_drawing import RealOrDrawingDataModule
from datamodules.real_or_drawing_demo import DEMO_CLASSES, write_demo_real_or_drawing
from homework.hw11 import main
from homework.lab.compare import recipes
from homework.registry import tiny
from models.domain_adaptation import DomainAdversarialClassifier, DomainClassifier, dann_lambda, reverse_gradient
from tests.conftest import QUIET, user_error

TINY = [*tiny("hw11"), *QUIET]


@pytest.fixture
def data(tmp_path) -> Path:
    """4 photos a class and 40 drawings, with the drawings' labels beside them (as the demo set has)."""
    write_demo_real_or_drawing(tmp_path / "kaggle", per_class=4, num_target=40)
    return tmp_path / "kaggle"


def datamodule(data: Path, **kwargs) -> RealOrDrawingDataModule:
    return RealOrDrawingDataModule(str(data), **{"num_workers": 0, "batch_size": 8, "net_width": 4, **kwargs})


# --- the adversarial game ------------------------------------------------------------------------------
def test_gradient_reversal_gives_the_features_minus_lambda_times_the_domain_loss_gradient():
    torch.manual_seed(0)
    classifier = DomainClassifier(16).eval()  # (eval: BatchNorm's batch statistics would not change the point)
    features = torch.randn(6, 16, requires_grad=True)
    domain = torch.tensor([1.0, 1, 1, 0, 0, 0])

    def domain_loss(x):
        return F.binary_cross_entropy_with_logits(classifier(x), domain)

    plain, = torch.autograd.grad(domain_loss(features), features)
    plain_params = torch.autograd.grad(domain_loss(features), list(classifier.parameters()))
    lamb = 0.37
    loss = domain_loss(reverse_gradient(features, lamb))
    reversed_, *reversed_params = torch.autograd.grad(loss, [features, *classifier.parameters()])
    assert plain.abs().sum() > 0
    torch.testing.assert_close(reversed_, -lamb * plain)
    for a, b in zip(plain_params, reversed_params):  # the domain classifier itself still minimizes its loss
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(reverse_gradient(features, lamb), features)  # the identity going forward


def test_dann_lambda_schedule_rises_from_0_to_lambda():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0, lamb=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1.0 and values[1] > 0.4  # steep start (gamma 10)
    assert dann_lambda(0.1, gamma=5) < dann_lambda(0.1, gamma=10)


def test_a_training_step_uses_both_domains(data):
    dm = datamodule(data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))[0]
    (source, labels), target = batch["source"], batch["target"]
    assert source.shape == (8, 1, 32, 32) and target.shape == (8, 1, 32, 32) and source.dtype == torch.uint8
    assert labels.shape == (8,) and labels.max() < 10
    # the photos are Canny edges (0 or 255), the drawings grey strokes
    assert set(source.unique().tolist()) <= {0, 255} and len(target.unique()) > 2
    batch = dm.on_after_batch_transfer(batch, 0)
    torch.manual_seed(0)
    model = DomainAdversarialClassifier(width=4, lamb=0.5, lamb_schedule="constant").train()

    def extractor_grad(target_images):
        model.zero_grad()
        out = model.losses({"source": batch["source"], "target": target_images}, 0.5)
        (out["class"] + out["domain"]).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.domain_classifier.parameters())
        return model.feature_extractor.conv[0].weight.grad.clone()

    # the drawings reach the feature extractor (through BatchNorm and the reversed domain gradient)
    assert not torch.allclose(extractor_grad(batch["target"]), extractor_grad(batch["target"].flip(0).roll(3, -1)))


def test_fit_then_predict_from_the_checkpoint_alone(data, tmp_path):
    labels = data / "real_or_drawing" / "target_labels.csv"
    cli = main(["fit", "--data.data_dir", str(data), *TINY, "--data.target_labels", str(labels),
                "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2"])
    (run,) = sorted(Path("runs/hw11").iterdir())
    logged = cli.trainer.callback_metrics
    for name in ("val_acc", "val_domain_acc", "val_target_entropy", "val_target_information", "val_score",
                 "val_target_acc"):
        assert name in logged and 0 <= float(logged[name]) <= 1, name
    assert float(logged["val_score"]) == pytest.approx((float(logged["val_acc"]) +
                                                        float(logged["val_target_information"])) / 2, abs=1e-6)
    with Image.open(run / "tsne.png") as picture:
        assert picture.size[0] > 800 and picture.size[1] > 600  # two rows (early, last) of two panels
    assert cli.model.current_lambda() == pytest.approx(dann_lambda(1.0))  # the schedule's end, after the last step
    best = cli.trainer.checkpoint_callback.best_model_path
    # a checkpoint file alone, from another folder: the model's settings and the data's come back from it
    moved = tmp_path / "elsewhere" / "model.ckpt"
    moved.parent.mkdir()
    moved.write_bytes(Path(best).read_bytes())
    predicted = main(["predict", "--ckpt_path", str(moved), "--data.data_dir", str(data), *QUIET])
    assert predicted.model.hparams.width == 8  # (the tiny recipe's, homework/configs/hw11_tiny.yaml)
    frame = pd.read_csv(moved.parent / "submission.csv")  # beside the checkpoint used
    validate_submission(frame, ["id", "label"], 40)
    assert list(frame.columns) == ["id", "label"] and frame.id.tolist() == list(range(40))
    assert frame.label.between(0, 9).all()


# --- the data ------------------------------------------------------------------------------------------
def test_the_layout_is_found_from_the_parent_and_the_files_in_name_order(data):
    files = RealOrDrawingDataModule.locate(data)
    assert files.root == data / "real_or_drawing"
    dm = datamodule(data)
    dm.setup("fit")
    assert torch.bincount(dm.source[1]).tolist() == [4] * 10 and dm.target.shape == (40, 1, 32, 32)
    assert [p.name for p in dm.target_files] == [f"{n:05d}.bmp" for n in range(40)]
    assert dm.class_names == ("horse", "bed", "clock", "apple", "cat", "plane", "television", "dog", "dolphin",
                              "spider")  # the course's classes: this is not the demo set (DEMO_CLASSES)
    assert dm.net_width == 4 and datamodule(data, net_width=None).net_width == 64  # the sample's width


def test_the_drawings_are_resized_to_32_px_and_the_photos_kept_grayscale_without_canny(data):
    dm = datamodule(data, canny=None)
    dm.setup("fit")
    assert len(dm.source[0].unique()) > 2  # grey levels, not edges
    drawing = np.asarray(Image.open(data / "real_or_drawing" / "test_data" / "0" / "00000.bmp").convert("L"))
    resized = np.asarray(Image.fromarray(drawing).resize((32, 32), Image.BILINEAR))
    assert drawing.shape == (28, 28) and (dm.target[0, 0].numpy() == resized).all()


def test_a_missing_class_folder_is_one_line(data, capsys):
    folder = data / "real_or_drawing" / "train_data" / "7"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY])
    assert "train_data: class folder 7/ missing" in line


def test_a_test_image_of_another_size_is_one_line_naming_it(data, capsys):
    odd = data / "real_or_drawing" / "test_data" / "0" / "00013.bmp"
    Image.new("L", (30, 28)).save(odd)
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY])
    assert str(odd) in line and "30x28 pixels" in line and "28x28" in line


def test_a_file_that_is_not_an_image_is_one_line_naming_it(data, capsys):
    notes = data / "real_or_drawing" / "train_data" / "3" / "notes.txt"
    notes.write_text("my notes")
    assert str(notes) in user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY])
    notes.unlink()
    broken = data / "real_or_drawing" / "test_data" / "0" / "00002.bmp"
    broken.write_bytes(b"not a bitmap")
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY])
    assert str(broken) in line and "cannot decode" in line


def test_bad_target_labels_are_one_line(data, tmp_path, capsys):
    short = tmp_path / "labels.csv"
    short.write_text("id,label\n0,1\n1,2\n")
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY, "--data.target_labels", str(short)])
    assert "--data.target_labels" in line and "one row per test image" in line
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY, "--data.target_labels",
                                     str(tmp_path / "none.csv")])
    assert "no such file" in line


def test_only_test_data_is_a_clear_error(tmp_path):
    (tmp_path / "real_or_drawing" / "test_data" / "0").mkdir(parents=True)
    with pytest.raises(DataError, match="holds test_data/ but not train_data/"):
        RealOrDrawingDataModule.locate(tmp_path)


def test_demo_set_has_a_gap_and_its_own_labels(tmp_path):
    write_demo_real_or_drawing(tmp_path, per_class=2, num_target=20)
    root = tmp_path / "real_or_drawing"
    with (Image.open(root / "train_data" / "3" / "6.bmp") as photo,
          Image.open(root / "test_data/0/00019.bmp") as drawing):
        assert photo.mode == "RGB" and photo.size == (32, 32)
        assert drawing.mode == "L" and drawing.size == (28, 28)
    labels = pd.read_csv(root / "target_labels.csv")
    assert labels.id.tolist() == list(range(20)) and sorted(labels.label) == sorted(list(range(10)) * 2)
    assert len(DEMO_CLASSES) == 10


# --- recipes -------------------------------------------------------------------------------------------
def test_compare_knows_the_recipes_beside_the_default():
    assert recipes("hw11") == ["default", "sample", "source_only", "strong"]


def test_compare_runs_source_only_and_the_sample_on_the_same_split_and_budget(data, capsys):
    labels = data / "real_or_drawing" / "target_labels.csv"
    results = main(["compare", "--recipes", "source_only,sample", "--data.data_dir", str(data), *TINY,
                    "--data.target_labels", str(labels), "--trainer.max_epochs", "1"])
    source_only, sample = (r.run_dir for r in results)
    configs = [yaml.safe_load((run / "config.yaml").read_text()) for run in (source_only, sample)]
    assert [c["model"]["lamb"] for c in configs] == [0.0, 0.1]  # each recipe's own lambda ...
    assert [c["model"]["lamb_schedule"] for c in configs] == ["constant", "constant"]
    assert [c["trainer"]["max_epochs"] for c in configs] == [1, 1]  # ... for the one budget,
    assert {c["data"]["val_ratio"] for c in configs} == {0.1} and {c["data"]["seed"] for c in configs} == {5201314}
    assert configs[1]["data"]["translate"] == 0.0 and configs[0]["data"]["translate"] == 0.1
    table = (source_only.parent / "comparison.md").read_text()
    assert "val_target_acc there" in table and "source_only" in table and "sample" in table
    assert "nan" not in table  # each metric read at the best epoch


def test_pseudo_labels_train_on_confident_drawings_only(data):
    dm = datamodule(data)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader()))[0], 0)
    model = DomainAdversarialClassifier(width=4)
    every = model.losses(batch, 1.0, pseudo_threshold=0.0)  # every drawing is "confident"
    assert every["pseudo_share"] == 1.0 and every["pseudo"] > 0
    (target_grad,) = torch.autograd.grad(every["pseudo"], [model.label_predictor.layer[-1].bias])
    assert target_grad.abs().sum() > 0  # the drawings' pseudo-labels train the label predictor
    none = model.losses(batch, 1.0, pseudo_threshold=1.0)  # no 10-class prediction is certain at the start
    assert none["pseudo_share"] == 0.0 and none["pseudo"] == 0.0
    assert "pseudo" not in model.losses(batch, 1.0)


def test_bad_model_options_are_one_line(data, capsys):
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY, "--model.lamb", "-1"])
    assert "--model.lamb must be at least 0" in line
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(data), *TINY,
                                     "--model.pseudo_label_threshold", "1.5"])
    assert "--model.pseudo_label_threshold" in line


def test_the_diagnosis_takes_a_perfect_validation_score():
    # (the advisor's own rule, here because HW11's photos reach val_acc 1.0 on the demo: `diagnose` divided by 0)
    from homework.lab.advisor import _check_overfitting, _Curves, _watched

    evidence = []
    curves = _Curves("error rate", [(0, 0.5), (1, 0.1), (2, 0.05)], [(0, 0.3), (1, 0.0), (2, 0.05)])
    watched = _watched(curves, {}, "val_acc", "max")
    assert _check_overfitting(curves, watched, None, (), {}, evidence)[0] == "overfitting"
    assert "rose to 0.05" in evidence[-1]
    curves = _Curves("error rate", [(0, 0.5), (1, 0.1), (2, 0.05)], [(0, 0.3), (1, 0.0), (2, 0.0)])
    watched = _watched(curves, {}, "val_acc", "max")
    assert _check_overfitting(curves, watched, None, (), {}, [])[0] == "healthy"  # 0 -> 0 is no rise
