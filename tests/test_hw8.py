"""HW8 end to end on a tiny generated face set: the course's file layout, the built validation set, memory kept
uint8 and memory-mapped, bad files as one line, the sample's networks and score, and fit + predict through the CLI
(the submission's header, ids and rows, the pictures, a checkpoint on its own)."""
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from callbacks import validate_submission
from datamodules.errors import DataError
from datamodules.faces import VAL_BLOCK, FacesDataModule, MappedFaces, to_float, to_uint8
from datamodules.faces_anomalies import KINDS, corrupt
from datamodules.faces_demo import LABELS_FILE, write_demo_faces
from datamodules.lab_hooks import ReferenceScore
from homework.hw8 import main
from homework.registry import tiny
from models.anomaly import AnomalyDetector
from models.autoencoders import VAE, ConvAutoencoder, FCNAutoencoder, vae_loss
from homework.lab.advisor import validation_samples
from tests.conftest import QUIET, user_error

CONFIGS = Path(__file__).resolve().parents[1] / "homework" / "configs"


def faces(folder: Path, num_train: int = 80, num_test: int = 24) -> Path:
    write_demo_faces(folder, num_train=num_train, num_test=num_test)
    return folder


def datamodule(folder: Path, **kwargs) -> FacesDataModule:
    return FacesDataModule(str(folder), **{"batch_size": 16, **kwargs})


# --- the files ------------------------------------------------------------------------------------
def test_demo_set_is_the_course_layout_with_faces_and_other_images(tmp_path):
    folder = faces(tmp_path / "data", num_train=40, num_test=30)
    train, test = np.load(folder / "trainingset.npy"), np.load(folder / "testingset.npy")
    assert train.shape == (40, 64, 64, 3) and test.shape == (30, 64, 64, 3)
    assert train.dtype == test.dtype == np.uint8
    labels = np.load(folder / LABELS_FILE)
    assert labels.sum() == 15 and len(labels) == 30  # half of the test images are anomalies
    assert FacesDataModule.locate(tmp_path).train == folder / "trainingset.npy"  # found one folder down too


def test_memory_stays_uint8_and_memory_mapped(tmp_path):
    dm = datamodule(faces(tmp_path))
    dm.setup("fit")
    assert isinstance(dm.train_images.array, np.memmap) and dm.train_images.array.dtype == np.uint8
    batch = next(iter(dm.train_dataloader()))
    assert batch.dtype == torch.uint8 and batch.shape == (16, 64, 64, 3)  # what a worker hands over
    images = dm.on_after_batch_transfer(batch, 0)  # float on the device, one batch at a time
    assert images.dtype == torch.float32 and images.shape == (16, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, batch.permute(0, 3, 1, 2).float() * 2 / 255 - 1)  # the sample's 2x/255 - 1
    assert torch.equal(to_uint8(images), batch)
    state = MappedFaces(dm.files.train)
    assert len(state) == 80  # (maps the file)
    assert state.__getstate__()["_array"] is None  # a worker maps the file itself, not a pickled copy


def test_validation_set_is_held_out_faces_and_their_corrupted_copies(tmp_path):
    folder = faces(tmp_path, num_train=600)
    dm = datamodule(folder, val_ratio=0.5)
    dm.setup("fit")
    assert not set(dm.train_rows) & set(dm.val_rows) and len(dm.val_rows) == 300
    blocks = list(dm.validation_set)
    assert len(blocks) == 2 and len(blocks[0][0]) == 2 * VAL_BLOCK  # 256 normal + 256 anomalies, then the rest
    images = torch.cat([b[0] for b in blocks])
    labels, kinds = torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])
    assert labels.sum() == 300 and (labels == 0).sum() == 300
    assert torch.equal(labels == 0, kinds == -1) and set(kinds[labels == 1].tolist()) == set(range(5))
    assert dm.val_anomalies == ["noise", "occlusion", "upside_down", "tiles", "channels"]  # blend: an option
    train = np.load(folder / "trainingset.npy")
    normal = images[labels == 0].numpy()
    assert np.array_equal(normal, train[dm.val_rows])  # the held-out images themselves
    anomalies = images[labels == 1].numpy().astype(int)
    assert (np.abs(anomalies - train[dm.val_rows].astype(int)).mean((1, 2, 3)) > 1).all()  # each one changed
    again = datamodule(folder, val_ratio=0.5, batch_size=3)  # the same set whatever the batch size
    again.setup("fit")
    assert torch.equal(next(iter(again.validation_set))[0], blocks[0][0])
    other = datamodule(folder, val_ratio=0.5, val_anomalies=["upside_down"])
    other.setup("validate")
    block = next(iter(other.validation_set))
    assert torch.equal(block[0][VAL_BLOCK:], block[0][:VAL_BLOCK].flip(1))  # (B, H, W, C): rows reversed


def test_each_anomaly_kind_keeps_the_shape_and_range():
    x = to_float(torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8))
    for k, name in enumerate(KINDS):
        out = corrupt(x, torch.full((6,), k), list(KINDS), torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1, name
        assert not torch.equal(out, x), name
    assert torch.equal(torch.sort(KINDS["tiles"](x, torch.Generator()).flatten(1)).values,
                       torch.sort(x.flatten(1)).values)  # shuffled tiles: the same pixels, elsewhere


# --- bad input: one line naming the file ---------------------------------------------------------
@pytest.mark.parametrize("fault, expected", [
    ("float", r"testingset\.npy: holds float32 pixels; HW8's files hold uint8"),
    ("channels_first", r"testingset\.npy: holds images of shape \(24, 3, 64, 64\) \(channels first\)"),
    ("other_homework", r"testingset\.npy: holds a table of shape \(24, 429\) \(features, not images: another "
                       r"homework's file\?\)"),
    ("not_npy", r"testingset\.npy: not a NumPy \.npy file"),
    ("truncated", r"testingset\.npy: not a readable NumPy \.npy file"),
    ("pickled", r"testingset\.npy: holds pickled Python objects"),
    ("missing", r"holds trainingset\.npy but not testingset\.npy \(HW8 needs both\)"),
])
def test_a_bad_test_file_is_one_line_naming_it(fault, expected, tmp_path, capsys):
    # through the DataModule, where the data is found (what `fit` does first); one of them through the command line
    folder = faces(tmp_path / "data")
    test = folder / "testingset.npy"
    if fault == "float":
        np.save(test, np.load(test).astype(np.float32) / 255)
    elif fault == "channels_first":
        np.save(test, np.load(test).transpose(0, 3, 1, 2).copy())
    elif fault == "other_homework":  # HW2's frame features: (frames, 11 x 39) float32
        np.save(test, np.zeros((24, 429), np.float32))
    elif fault == "not_npy":
        test.write_text("ID,score\n0,1.0\n")
    elif fault == "truncated":  # a download cut short
        test.write_bytes(test.read_bytes()[:50_000])
    elif fault == "pickled":
        np.save(test, np.array([{"image": 1}], dtype=object), allow_pickle=True)
    else:
        test.unlink()
    with pytest.raises(DataError) as error:
        FacesDataModule(str(folder))
    assert re.search(expected, str(error.value)) and "\n" not in str(error.value), error.value
    if fault == "other_homework":
        line = user_error(capsys, main, ["fit", "--data.data_dir", str(folder), *tiny("hw8"), *QUIET])
        assert re.search(expected, line), line


def test_bad_options_are_one_line(tmp_path, capsys):
    data = ["--data.data_dir", str(faces(tmp_path / "data"))]
    line = user_error(capsys, main, ["fit", *data, *tiny("hw8"), "--data.val_anomalies", "[lasers]", *QUIET])
    assert "val_anomalies" in line
    line = user_error(capsys, main, ["fit", *data, *tiny("hw8"), "--data.val_anomalies", "[]", *QUIET])
    assert "--data.val_anomalies needs at least one kind" in line
    line = user_error(capsys, main, ["fit", *data, *tiny("hw8"), "--model.latent_dim", "0", *QUIET])
    assert "--model.latent_dim" in line


def test_too_few_images_to_hold_out_any_is_said(tmp_path):
    folder = faces(tmp_path, num_train=5)
    with pytest.raises(DataError, match=r"trainingset\.npy: 5 image\(s\) cannot be split"):
        datamodule(folder).setup("fit")


# --- the networks and the score ------------------------------------------------------------------
def test_the_samples_networks_as_written():
    fcn = FCNAutoencoder()
    assert [m.out_features for m in fcn.encoder if isinstance(m, torch.nn.Linear)] == [128, 64, 12, 3]
    assert [m.out_features for m in fcn.decoder if isinstance(m, torch.nn.Linear)] == [12, 64, 128, 12288]
    cnn = ConvAutoencoder()
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in cnn.encoder if hasattr(m, "stride")] == [
        (3, 12, (4, 4), (2, 2)), (12, 24, (4, 4), (2, 2)), (24, 48, (4, 4), (2, 2))]
    assert sum(p.numel() for p in cnn.parameters()) == 47355
    vae = VAE()
    assert sum(p.numel() for p in vae.parameters()) == 65835
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 48, 8, 8)
    # the sample's loss_vae, written as it is written there
    mse = torch.nn.MSELoss()(recon, x)
    kld_element = mu.pow(2).add(logvar.exp()).mul(-1).add(1).add(logvar)
    assert torch.allclose(vae_loss(recon, x, mu, logvar), mse + torch.sum(kld_element).mul(-0.5))
    vae.eval()
    assert torch.equal(vae(x)[0], vae(x)[0])  # evaluation decodes the mean: the same scores every time


def test_the_score_is_the_samples_root_of_summed_squared_error():
    model = AnomalyDetector(net="cnn").eval()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    expected = torch.sqrt(torch.nn.MSELoss(reduction="none")(model.net(x), x).sum([1, 2, 3]))
    assert torch.allclose(model(x), expected)
    fcn = AnomalyDetector(net="fcn").eval()
    flat = x.view(4, -1)  # the sample flattens the (B, 3, 64, 64) image and sums over the last axis
    assert torch.allclose(fcn(x), torch.sqrt(((fcn.net.decoder(fcn.net.encoder(flat)) - flat) ** 2).sum(-1)))


@pytest.mark.parametrize("net", ["fcn", "cnn", "vae", "resnet"])
def test_each_net_trains_a_step(net):
    torch.manual_seed(0)
    model = AnomalyDetector(net=net, width=4)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.batch_loss(x)[0].item()
    for _ in range(3):
        optimizer.zero_grad()
        model.batch_loss(x)[0].backward()
        optimizer.step()
    assert model.batch_loss(x)[0].item() < before and model.eval()(x).shape == (4,)


def test_reference_score_is_pca_reconstruction_error_in_roc_auc(tmp_path):
    dm = datamodule(faces(tmp_path, num_train=300), val_ratio=0.3)
    reference = dm.reference_score(max_samples=100)
    assert isinstance(reference, ReferenceScore) and reference.monitor == AnomalyDetector.monitor
    assert reference.model.startswith("PCA reconstruction error") and "100 training images" in reference.model
    assert 0.6 < reference.score <= 1.0  # noise, tiles, occlusion... are off PCA's face subspace
    assert not reference.ceiling


# --- the whole workflow ---------------------------------------------------------------------------
@pytest.mark.parametrize("recipe, net", [("hw8.yaml", "resnet"), ("hw8_sample.yaml", "vae")])
def test_every_shipped_recipe_trains_a_batch(recipe, net, tmp_path):
    folder = faces(tmp_path / "data")
    cli = main(["fit", "--config", str(CONFIGS / recipe), "--data.data_dir", str(folder), "--model.net", net,
                "--data.batch_size", "8", "--trainer.fast_dev_run", "1", *QUIET])
    assert cli.model.hparams.net == net and cli.model.monitor == "val_auroc" and cli.model.mode == "max"
    assert 0 <= cli.trainer.callback_metrics["val_auroc"].item() <= 1  # logged: what the checkpoint follows


def test_fit_then_predict_writes_the_submission_and_the_pictures(tmp_path):
    folder = faces(tmp_path / "data", num_test=24)
    data = ["--data.data_dir", str(folder)]
    cli = main(["fit", *data, *tiny("hw8"), *QUIET])
    (run,) = sorted(Path("runs/hw8").iterdir())
    assert cli.trainer.checkpoint_callback.monitor == "val_auroc" and cli.trainer.checkpoint_callback.mode == "max"
    metrics = cli.trainer.callback_metrics
    assert "kind_auroc/noise" in metrics and "classifier/train_loss" in metrics
    assert validation_samples(cli.trainer) == 2 * len(cli.datamodule.val_rows)  # faces and their corrupted copies
    assert not torch.equal(cli.model.score_stats, torch.tensor([0.0, 1.0, 0.0, 1.0]))  # the classifier's scales

    predicted = main(["predict", "--ckpt_path", "best", *data, *QUIET])
    assert predicted.model.classifier is not None
    assert torch.equal(predicted.model.score_stats, cli.model.score_stats)  # kept in the checkpoint
    text = (run / "prediction.csv").read_text().splitlines()
    assert text[0] == "ID,score" and len(text) == 25
    frame = pd.read_csv(run / "prediction.csv")
    validate_submission(frame, ["ID", "score"], 24)
    assert frame.ID.tolist() == list(range(24))  # the sample's index_label='ID': 0, 1, ...
    for picture in ("reconstructions.png", "anomalies.png", "learning_curve.png"):
        with Image.open(run / picture) as image:
            assert image.size[0] > 600, picture

    # a checkpoint on its own, elsewhere, predicts the same file beside it
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(cli.trainer.checkpoint_callback.best_model_path, alone / "model.ckpt")
    shutil.rmtree("runs")
    main(["predict", "--ckpt_path", str(alone / "model.ckpt"), *data, *QUIET])
    assert pd.read_csv(alone / "prediction.csv").equals(frame)


def test_predicted_scores_are_the_models_scores_of_the_test_images(tmp_path):
    folder = faces(tmp_path / "data", num_test=20)
    data = ["--data.data_dir", str(folder)]
    main(["fit", *data, *tiny("hw8"), "--model.classifier", "false", "--model.net", "cnn", *QUIET])
    validated = main(["validate", "--ckpt_path", "best", *data, *QUIET])
    predicted = main(["predict", "--ckpt_path", "best", *data, *QUIET])
    (run,) = sorted(Path("runs/hw8").iterdir())
    scores = pd.read_csv(run / "prediction.csv").score.to_numpy()
    model = predicted.model.eval()
    test = to_float(torch.from_numpy(np.load(folder / "testingset.npy")))
    with torch.no_grad():
        expected = ((model.net(test) - test) ** 2).sum((1, 2, 3)).sqrt().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    # val_auroc is the ROC AUC of these scores on the validation set (not of their sigmoid: all 1.0, a tie)
    dm = validated.datamodule
    images, labels, _ = next(iter(dm.validation_set))
    with torch.no_grad():
        val_scores = model(to_float(images)).numpy()
    assert validated.trainer.callback_metrics["val_auroc"].item() == pytest.approx(
        roc_auc_score(labels.numpy(), val_scores), abs=1e-6)


def test_compare_runs_each_variant_and_names_no_ceiling(capsys):
    """HW8's reference (PCA) is a baseline, not a ceiling: `compare` must not score it again after each variant
    (it once called the hook with 0 samples: sklearn's traceback after the first variant)."""
    results = main(["compare", "--optimizers", "sgd,adam", *tiny("hw8"), *QUIET])
    assert [r.variant for r in results] == ["sgd", "adam"]
    assert all(r.monitor == "val_auroc" and r.mode == "max" for r in results)
    (table,) = Path("runs/hw8").glob("*compare*/comparison.md")
    assert "Ceiling:" not in table.read_text()


def test_a_training_step_with_the_classifier_runs_the_autoencoder_once(tmp_path):
    """The boss hint's classifier tracks the reconstruction error of the very pass it trained on: BatchNorm's
    running statistics move once per step (they moved twice: a second, no-grad pass in train mode)."""
    folder = faces(tmp_path / "data")
    cli = main(["fit", "--data.data_dir", str(folder), *tiny("hw8"), "--trainer.limit_val_batches", "0", *QUIET])
    counts = {int(m.num_batches_tracked) for m in cli.model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert counts == {cli.trainer.global_step} and cli.model.classifier is not None
