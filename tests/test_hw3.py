"""HW3 end to end on tiny generated JPEGs: the three layouts, labels, test order and Ids, broken
images, augmentation and TTA, the pictures, and a fit + predict round trip through the CLI."""
import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from callbacks import ClassificationPlots, validate_submission
from datamodules.errors import DataError
from datamodules.food import DEMO_CLASSES, LAYOUTS, ML2021, ML2022, ML2023, FoodDataModule, FoodLayout
from datamodules.food_demo import write_demo_food
from homework.hw3 import main
from models.classifier import ImageClassifier
from models.cnn import SampleCNN, build_net
from tests.conftest import QUIET

TINY = ["--data.image_size", "32", "--data.num_workers", "0", "--data.batch_size", "8",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", *QUIET]
#: Where each year's Kaggle zip puts its split folders, relative to the folder you unzip into.
UNZIPPED = {"ml2021": "food-11", "ml2022": "food11", "ml2023": "."}


def jpeg(path: Path, value: int, size: tuple[int, int] = (32, 24)) -> None:
    """A small JPEG whose pixels are all close to `value` (so a test can tell images apart after decoding)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def make_food(parent: Path, layout: FoodLayout, per_class: int = 2, num_test: int = 12) -> Path:
    """A tiny food-11 set in `layout`'s folders and naming, as unzipped into `parent`; returns the splits' folder.

    Test image k (in sorted-name order) has pixel value 10 * k; they are written in reverse order.
    ML2021 files carry a misleading name prefix: their class must come from the folder.
    """
    root = parent / UNZIPPED[layout.name]
    for split in (layout.train, layout.valid):
        for label in range(11):
            for k in range(per_class):
                if layout.labels_in_folders:
                    path = root / split / f"{label:02d}" / f"{(label + 1) % 11}_{k}.jpg"
                else:
                    path = root / split / f"{label}_{k}.jpg"
                jpeg(path, 20 * label)
    test = root / layout.test / ("00" if layout.labels_in_folders else "")
    for k in reversed(range(num_test)):
        jpeg(test / f"{k + layout.first_id:04d}.jpg", 10 * k)
    return root.resolve()


def datamodule(data_dir: Path, **kwargs) -> FoodDataModule:
    return FoodDataModule(str(data_dir), **{"image_size": 32, "num_workers": 0, "batch_size": 8, **kwargs})


# --- finding the data -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.name)
def test_each_years_layout_is_found_from_its_folder_or_the_parent(layout, tmp_path):
    root = make_food(tmp_path / "kaggle", layout)
    for given in (root, tmp_path / "kaggle"):
        files = FoodDataModule.locate(given)
        assert files.layout == layout and files.root == root
    dm = datamodule(tmp_path / "kaggle")
    dm.setup("fit")
    assert dm.kaggle_competition == layout.kaggle_competition
    assert torch.bincount(dm.train.labels, minlength=11).tolist() == [2] * 11
    # labels follow the files: class c was drawn with pixel value 20 c
    for split in (dm.train, dm.valid):
        means = split.images.float().mean((1, 2, 3))
        assert torch.allclose(means, 20 * split.labels.float(), atol=3)


def test_kaggle_folder_names_match_the_years():
    assert (ML2021.train, ML2021.valid, ML2021.test) == ("training/labeled", "validation", "testing")
    assert (ML2022.train, ML2022.valid, ML2022.test) == ("training", "validation", "test")
    assert (ML2023.train, ML2023.valid, ML2023.test) == ("train", "valid", "test")


def test_half_a_layout_is_a_clear_error(tmp_path, capsys):
    root = make_food(tmp_path, ML2023)
    for f in (root / "test").iterdir():
        f.unlink()
    (root / "test").rmdir()
    with pytest.raises(DataError, match="ML2023 food-11 layout .* but test/ is missing"):
        FoodDataModule.locate(root)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.data_dir", str(root), *TINY])
    assert exit_info.value.code == 2 and "test/ is missing" in capsys.readouterr().err


def test_a_file_name_without_a_label_is_named(tmp_path):
    root = make_food(tmp_path, ML2022)
    jpeg(root / "training" / "pizza.jpg", 0)
    with pytest.raises(DataError, match=r"pizza\.jpg: cannot read its class"):
        datamodule(tmp_path).setup("fit")


def test_test_images_are_read_in_sorted_name_order(tmp_path):
    make_food(tmp_path, ML2023, num_test=12)
    dm = datamodule(tmp_path)
    dm.setup("predict")
    assert [p.name for p in dm.test.files] == [f"{k:04d}.jpg" for k in range(12)]
    means = dm.test.images.float().mean((1, 2, 3))
    assert torch.allclose(means, 10 * torch.arange(12).float(), atol=3)


# --- Kaggle export --------------------------------------------------------------------------------
@pytest.mark.parametrize("layout, first, last",
                         [(ML2021, "0", "11"), (ML2022, "0001", "0012"), (ML2023, "0000", "0011")],
                         ids=lambda v: getattr(v, "name", v))
def test_submission_ids_follow_the_years_sample_code(layout, first, last, tmp_path):
    make_food(tmp_path, layout, num_test=12)
    dm = datamodule(tmp_path)
    dm.setup("predict")
    predictions = torch.nn.functional.one_hot(torch.arange(12) % 11, 11).float()
    frame = dm.to_submission(predictions)
    validate_submission(frame, dm.submission_columns, dm.num_test_samples)
    assert list(frame.columns) == ["Id", "Category"]
    assert (frame.Id.iloc[0], frame.Id.iloc[-1]) == (first, last)
    assert frame.Category.tolist() == [k % 11 for k in range(12)]


# --- broken images --------------------------------------------------------------------------------
def break_two_images(root: Path) -> tuple[Path, Path]:
    garbage, truncated = root / "train" / "3_0.jpg", root / "train" / "5_1.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    truncated.write_bytes(truncated.read_bytes()[:200])
    return garbage, truncated


def test_a_corrupt_image_is_a_clear_error_naming_the_file(tmp_path, capsys):
    root = make_food(tmp_path, ML2023)
    garbage, truncated = break_two_images(root)
    with pytest.raises(DataError) as error:
        datamodule(tmp_path).setup("fit")
    assert str(error.value).startswith(f"{garbage}: cannot decode this image") and truncated.name in str(error.value)
    # decoded by DataLoader workers, still one line from the CLI, not a worker's traceback
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.data_dir", str(tmp_path), *TINY, "--data.num_workers", "1"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1
    assert "3_0.jpg" in lines[0] and "--data.bad_images skip" in lines[0]


def test_corrupt_images_can_be_skipped_with_a_warning(tmp_path, caplog):
    root = make_food(tmp_path, ML2023)
    garbage, truncated = break_two_images(root)
    (root / "test" / "0004.jpg").write_bytes(b"broken")
    dm = datamodule(tmp_path, bad_images="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
        dm.setup("predict")
    assert garbage.name in caplog.text and truncated.name in caplog.text and "0004.jpg" in caplog.text
    assert len(dm.train_dataloader().dataset) == 22 - 2
    kept = [dm.train.files[i].name for i in dm.train.keep]
    assert garbage.name not in kept and truncated.name not in kept
    assert dm.num_test_samples == 12  # Kaggle wants a row for the broken test image too


# --- disk cache -----------------------------------------------------------------------------------
def test_disk_cache_matches_memory_and_is_reused(tmp_path, caplog):
    make_food(tmp_path / "d", ML2023)
    memory = datamodule(tmp_path / "d")
    memory.setup("fit")
    disk = datamodule(tmp_path / "d", cache="disk", cache_dir=str(tmp_path / "cache"))
    disk.setup("fit")
    (cache_file,) = (tmp_path / "cache").glob("ml2023_train_32px_*.npy")
    assert torch.equal(torch.stack([disk.train.images[i] for i in range(len(disk.train.files))]), memory.train.images)
    assert len(pickle.dumps(disk.train.images)) < 1000  # workers reopen the file, not a copy of it
    stamp = cache_file.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = datamodule(tmp_path / "d", cache="disk", cache_dir=str(tmp_path / "cache"))
        again.setup("fit")
    assert cache_file.stat().st_mtime_ns == stamp and "Using the decoded train images" in caplog.text


# --- augmentation and TTA -------------------------------------------------------------------------
def test_augmentation_from_config_and_mixup_cutmix_soft_labels(tmp_path):
    make_food(tmp_path, ML2023, per_class=4)
    torch.manual_seed(0)
    dm = datamodule(tmp_path, auto_augment="trivial", random_erasing=0.5, mixup_alpha=0.4, cutmix_alpha=1.0)
    dm.setup("fit")
    names = [type(t).__name__ for t in dm.augment.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide", "RandomErasing"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32)
    mixed_x, mixed_y = dm.prepare_batch((x, y), train=True)
    assert mixed_x.dtype == torch.float32 and mixed_y.shape == (8, 11)
    assert torch.allclose(mixed_y.sum(1), torch.ones(8)) and (mixed_y.max(1).values < 1).any()  # labels mixed
    model = ImageClassifier(11, 32, "resnet18")
    assert torch.isfinite(model.training_step((mixed_x, mixed_y), 0))
    clean_x, clean_y = dm.prepare_batch((x, y), train=False)
    assert torch.equal(clean_y, y)
    assert torch.allclose(dm.denormalize(clean_x), x.float() / 255, atol=1e-5)


def test_tta_yields_views_and_changes_nothing_when_disabled(tmp_path):
    root = make_food(tmp_path, ML2023, num_test=12)
    ramp = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (24, 32, 3)).copy()
    for path in (root / "test").iterdir():  # so that flips and crops change the picture
        Image.fromarray(ramp).save(path, quality=95)
    model = ImageClassifier(11, 32, "resnet18").eval()
    plain = datamodule(tmp_path)
    plain.setup("predict")
    (x,) = [plain.prepare_batch(b) for b in plain.predict_dataloader()][:1]
    with torch.no_grad():
        clean = model.predict_step(x, 0)
        assert x.shape == (8, 3, 32, 32) and torch.allclose(clean, model(x).softmax(-1))
        assert torch.equal(plain.blend_views(clean), clean)

        tta = datamodule(tmp_path, tta_views=3, tta_weight=0.25)
        tta.setup("predict")
        views = tta.prepare_batch(next(iter(tta.predict_dataloader())))
        assert views.shape == (8, 4, 3, 32, 32)
        assert torch.equal(views[:, 0], x) and not torch.equal(views[:, 1], x)  # view 0 is the clean image
        probs = model.predict_step(views, 0)
        assert probs.shape == (8, 4, 11) and torch.allclose(probs[:, 0], clean, atol=1e-5)
        blended = tta.blend_views(probs)
        assert blended.shape == (8, 11)
        assert torch.allclose(blended, 0.25 * probs[:, 0] + 0.75 * probs[:, 1:].mean(1))
        tta.tta_weight = 1.0
        assert torch.allclose(tta.blend_views(probs), clean, atol=1e-5)


# --- networks -------------------------------------------------------------------------------------
def test_sample_cnn_is_the_official_architecture():
    net = build_net("sample", 11, 128)
    assert isinstance(net, SampleCNN)
    convs = [m.out_channels for m in net.cnn if isinstance(m, torch.nn.Conv2d)]
    linears = [(m.in_features, m.out_features) for m in net.fc if isinstance(m, torch.nn.Linear)]
    assert convs == [64, 128, 256, 512, 512] and linears == [(8192, 1024), (1024, 512), (512, 11)]
    assert net(torch.zeros(2, 3, 128, 128)).shape == (2, 11)


def test_no_network_loads_pretrained_weights(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("pretrained weights requested")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    for name in ("sample", "resnet18", "resnet34"):
        assert build_net(name, 11, 32)(torch.zeros(2, 3, 32, 32)).shape == (2, 11)


def test_unknown_network_is_a_config_error(capsys, tmp_path):
    make_food(tmp_path, ML2023)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.data_dir", str(tmp_path), "--model.net", "resnet_nonexistent", *TINY])
    assert exit_info.value.code == 2 and "unknown network" in capsys.readouterr().err


# --- the whole workflow ---------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["hw3.yaml", "hw3_sample.yaml", "hw3_strong.yaml"])
def test_every_shipped_recipe_trains_a_batch(recipe, tmp_path):
    make_food(tmp_path, ML2023)
    config = Path(__file__).resolve().parents[1] / "homework" / "configs" / recipe
    cli = main(["fit", "--config", str(config), "--data.data_dir", str(tmp_path), "--data.batch_size", "4",
                "--data.num_workers", "0", "--trainer.fast_dev_run", "1", *QUIET])
    expected = {"hw3.yaml": ("resnet18", 128), "hw3_sample.yaml": ("sample", 128), "hw3_strong.yaml": ("resnet18", 160)}
    assert (cli.model.hparams.net, cli.model.hparams.image_size) == expected[recipe]
    assert (cli.datamodule.mix is not None) == (recipe == "hw3_strong.yaml")


def test_fit_then_predict_writes_a_valid_submission_and_the_pictures(tmp_path):
    make_food(tmp_path / "data", ML2022, num_test=12)
    data = ["--data.data_dir", str(tmp_path / "data")]
    cli = main(["fit", *data, *TINY, "--model.net", "sample"])
    (run,) = sorted(Path("runs/hw3").iterdir())
    for picture in ("confusion_matrix.png", "misclassified.png", "learning_curve.png"):
        with Image.open(run / picture) as image:
            assert image.size[0] > 400
    (plots,) = [c for c in cli.trainer.callbacks if isinstance(c, ClassificationPlots)]
    assert plots.best["confusion"].sum() == 22  # every validation image counted once
    assert plots.best["score"] == pytest.approx(float(cli.trainer.checkpoint_callback.best_model_score))
    assert cli.model.hparams.image_size == 32 and cli.model.hparams.net == "sample"

    # predict-time settings are not taken back from the checkpoint: TTA is chosen now
    predicted = main(["predict", "--ckpt_path", "best", *data, *QUIET, "--data.tta_views", "2"])
    assert predicted.datamodule.tta_views == 2 and predicted.model.hparams.net == "sample"
    frame = pd.read_csv(run / "submission.csv", dtype={"Id": str})
    validate_submission(frame, ["Id", "Category"], 12)
    assert frame.Id.tolist() == [f"{k:04d}" for k in range(1, 13)]
    assert frame.Category.between(0, 10).all() and frame.Category.dtype.kind == "i"


def test_demo_set_is_digits_in_the_ml2022_layout(tmp_path):
    write_demo_food(tmp_path / "demo", per_class=(3, 2, 2))
    files = FoodDataModule.locate(tmp_path / "demo")
    assert files.layout == ML2022 and files.root.name == "food11"
    labels = sorted({int(p.name.split("_")[0]) for p in (files.root / "training").iterdir()})
    assert labels == list(range(11))
    with Image.open(next((files.root / "test").iterdir())) as image:
        assert image.size == (64, 48) and image.mode == "RGB"
    dm = FoodDataModule(num_workers=0)  # no data anywhere: the demo set, at its own 32 px
    assert dm.is_demo and dm.image_size == 32 and dm.class_names == DEMO_CLASSES


def test_demo_fit_logs_the_pictures_to_wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(Path.cwd()))  # no ~/.netrc: W&B counts as logged out
    # the demo's automatic 32 px must agree between the model's and the data's hparams (W&B logs both)
    main(["fit", *[a for a in TINY if a not in ("--data.image_size", "32")], "--trainer.limit_val_batches", "2"])
    (run,) = sorted(Path("runs/hw3").iterdir())
    assert run.name.endswith("_fit_demo")
    media = {p.name.rsplit("_", 2)[0] for p in run.glob("wandb/offline-run-*/files/media/images/*.png")}
    assert {"confusion_matrix", "misclassified"} <= media
