"""HW3: food-11 image classification (ML2021, ML2022, ML2023 layouts).

Speed on a CPU comes from decoding each JPEG once, at the training resolution, into a uint8
cache (RAM, or a memory-mapped .npy for sets larger than RAM); augmentation then runs on small
tensors (both in food_images.py). The sample code re-decodes every full-size JPEG with PIL in every epoch.
The demo set: food_demo.py.
"""

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from datamodules.atomic import build_cache, write_atomically
from datamodules.errors import DataError
from datamodules.base import EpochLoader, HomeworkDataModule, available_cpus
from datamodules.food_demo import write_demo_food
from datamodules.food_images import DecodeFiles, FoodImages, Images, MappedImages, Split, augmentation
from datamodules.packed import source_key
from datamodules.lab_hooks import ReferenceData, Remedy, sample_rows

log = logging.getLogger(__name__)

FOOD11_CLASSES = ("Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat",
                  "Noodles/Pasta", "Rice", "Seafood", "Soup", "Vegetable/Fruit")
#: The demo's 11 classes: digits 0-9 and a "2x2" plate of four small digits (see `write_demo_food`).
DEMO_CLASSES = (*"0123456789", "2x2 plate")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
#: ImageNet statistics: food photos are natural images, and every torchvision recipe uses them.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The advisor's simple reference sees each image as a thumbnail of this many pixels a side (8 x 8 x RGB).
THUMBNAIL = 8


@dataclass(frozen=True)
class FoodLayout:
    """One year's folders and Kaggle id format."""

    name: str
    train: str
    valid: str
    test: str
    labels_in_folders: bool  # ML2021: training/labeled/03/x.jpg; ML2022/2023: training/3_17.jpg
    first_id: int
    id_digits: int  # Ids zero-padded to this width; 0 = not padded
    kaggle_competition: str


ML2021 = FoodLayout("ml2021", "training/labeled", "validation", "testing", True, 0, 0, "ml2021spring-hw3")
ML2022 = FoodLayout("ml2022", "training", "validation", "test", False, 1, 4, "ml2022spring-hw3b")
ML2023 = FoodLayout("ml2023", "train", "valid", "test", False, 0, 4, "ml2023spring-hw3")
LAYOUTS = (ML2021, ML2022, ML2023)


@dataclass(frozen=True)
class FoodFiles:
    layout: FoodLayout
    root: Path  # the folder that holds the three splits


def match_layout(root: Path) -> FoodLayout | None:
    """The layout whose three split folders `root` holds; DataError when it holds only some of them."""
    for layout in LAYOUTS:
        if all((root / d).is_dir() for d in (layout.train, layout.valid, layout.test)):
            return layout
    for layout in LAYOUTS:
        present = [d for d in (layout.train, layout.valid, layout.test) if (root / d).is_dir()]
        if len(present) >= 2:
            missing = [f"{d}/" for d in (layout.train, layout.valid, layout.test) if d not in present]
            raise DataError(f"{root}: looks like the {layout.name.upper()} food-11 layout "
                            f"({', '.join(p + '/' for p in present)}) but {' and '.join(missing)} is missing")
    return None


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, in sorted-name order (the order Kaggle's test Ids follow)."""
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise DataError(f"{folder}: no images (.jpg/.jpeg/.png) in this folder")
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def parse_label(path: Path, from_folder: bool, num_classes: int) -> int:
    """The class of a labelled image: its folder (ML2021) or the `{label}_{index}.jpg` name (ML2022/2023)."""
    text = path.parent.name if from_folder else path.name.split("_")[0]
    if not text.isdigit() or int(text) >= num_classes:
        expected = "a class folder 00..10" if from_folder else "a name {label}_{index}.jpg with label 0..10"
        raise DataError(f"{path}: cannot read its class (expected {expected})")
    return int(text)


def default_num_workers() -> int:
    """One core for the training process, the rest (at most 8) for augmentation."""
    return max(1, min(8, available_cpus() - 1))


class FoodDataModule(HomeworkDataModule[FoodFiles]):
    """Food-11 from any year's layout, decoded once into a uint8 cache and augmented on tensors.

    `data_dir` may be the folder holding the splits or its parent (as unzipped from Kaggle).
    `image_size=None` is 128 px (the sample's) on food-11 and 32 px on the 8x8-pixel demo digits.
    Augmentation: `crop_scale` (RandomResizedCrop; None = none), `hflip`, `auto_augment`
    (trivial / auto / rand), `random_erasing` per image; `mixup_alpha` / `cutmix_alpha` per batch.
    `tta_views` > 0 makes `predict` also score that many augmented views of each test image,
    blended with the clean prediction (weight `tta_weight`).
    `cache="disk"` keeps the decoded images in a memory-mapped .npy in `cache_dir` (default: a
    `.cache` folder beside the splits), reused by later runs. `bad_images="skip"` leaves
    undecodable training/validation images out with a warning (a test image gets a blank picture).

    Args:
        data_dir: Folder with the food-11 splits (or a folder one level above it). None: data/hw3, else a demo set.
        image_size: Training resolution in pixels; None: 128 on food-11, 32 on the demo digits.
        batch_size: Images per batch.
        num_workers: Data loader processes; None: the cores but one (at most 8).
        crop_scale: Area range of RandomResizedCrop, e.g. [0.5, 1.0]; null: no crop.
        hflip: Probability of a horizontal flip.
        auto_augment: Automatic augmentation policy: trivial, auto or rand; null: none.
        random_erasing: Probability of erasing a random rectangle.
        mixup_alpha: MixUp strength per batch (0: off).
        cutmix_alpha: CutMix strength per batch (0: off).
        tta_views: Predict: augmented views per test image blended with the clean one (0: off).
        tta_weight: Predict: weight of the clean view's prediction in the blend.
        cache: Keep the decoded images in memory, or on disk (memory-mapped, reused by later runs).
        cache_dir: Folder of the disk cache; None: a .cache folder beside the splits.
        bad_images: An undecodable image stops the run (error) or is left out with a warning (skip).
    """

    homework = "hw3"
    kaggle_competition = "ml2023spring-hw3"
    expected_files = ("train/ valid/ test/ (ML2023), food11/training|validation|test/ (ML2022) "
                      "or food-11/training/labeled|validation|testing/ (ML2021)")
    num_classes = 11
    #: The training resolution when `image_size` is None: on the course's photos, and on the demo's 8x8-pixel digits.
    default_image_size, demo_image_size = 128, 32
    #: How a photo becomes a square when decoded: None squashes it (HW3's sample); a fraction f resizes its shorter
    #: side to size / f and keeps the centre (HW13's sample: Resize(256) + CenterCrop(224) is f = 0.875).
    decode_crop: float | None = None
    # How a run executes, not what the model learns: a later command's values win over the checkpoint's.
    runtime_args = HomeworkDataModule.runtime_args + ("cache", "cache_dir", "bad_images", "tta_views", "tta_weight")
    memory_args = ("batch_size", "image_size")
    remedies = (
        Remedy("bias", "larger images", "--data.image_size", times=1.25),
        Remedy("overfitting", "augmentation", "--data.auto_augment", ladder=(None, "trivial")),
        Remedy("overfitting", "augmentation", "--data.random_erasing", plus=0.25, start=0.25, most=0.5),
        Remedy("overfitting", "mixing images", "--data.mixup_alpha", ladder=(0.0, 0.2)),
        Remedy("overfitting", "mixing images", "--data.cutmix_alpha", ladder=(0.0, 1.0)),
    )

    def __init__(
        self,
        data_dir: str | None = None,
        image_size: int | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        crop_scale: tuple[float, float] | None = (0.5, 1.0),
        hflip: float = 0.5,
        auto_augment: Literal["trivial", "auto", "rand"] | None = None,
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        tta_views: int = 0,
        tta_weight: float = 0.5,
        cache: Literal["memory", "disk"] = "memory",
        cache_dir: str | None = None,
        bad_images: Literal["error", "skip"] = "error",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir, self.files, self.is_demo = self.resolve_data_dir(data_dir)
        self.layout = self.files.layout
        self.kaggle_competition = self.layout.kaggle_competition
        self.class_names = DEMO_CLASSES if self.is_demo else FOOD11_CLASSES
        self.image_size = image_size or (self.demo_image_size if self.is_demo else self.default_image_size)
        self.save_hyperparameters({"image_size": self.image_size})  # resolved; Lightning checks the model agrees
        self.batch_size, self.tta_views, self.tta_weight = batch_size, tta_views, tta_weight
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.cache, self.bad_images = cache, bad_images
        self.cache_dir = Path(cache_dir) if cache_dir else self.files.root / ".cache"
        self.augment = augmentation(self.cache_size, crop_scale, hflip, auto_augment, random_erasing)
        mixers = [mix(alpha=a, num_classes=self.num_classes)
                  for mix, a in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if a > 0]
        self.mix = v2.RandomChoice(mixers) if mixers else None
        self.train: Split | None = None
        self.valid: Split | None = None
        self.test: Split | None = None

    @property
    def cache_size(self) -> int:
        """The resolution images are decoded and augmented at (a subclass may keep more pixels than it trains on)."""
        return self.image_size

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> FoodFiles | None:
        layout = match_layout(directory)
        return None if layout is None else FoodFiles(layout, directory)

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        write_demo_food(directory)

    # --- decoding into the cache -------------------------------------------------------------
    def _read_split(self, name: str, labelled: bool) -> Split:
        folder = self.files.root / getattr(self.layout, name)
        files = list_images(folder)
        labels = None
        if labelled:
            from_folder = self.layout.labels_in_folders
            labels = torch.tensor([parse_label(p, from_folder, self.num_classes) for p in files])
        images, failures = self._decode(name, files)
        keep = np.arange(len(files))
        if failures:
            bad = [files[i] for i, _ in failures]
            if self.bad_images == "error":
                first, why = files[failures[0][0]], failures[0][1]
                more = f" (and {len(bad) - 1} more: {', '.join(p.name for p in bad[1:4])})" if len(bad) > 1 else ""
                raise DataError(f"{first}: cannot decode this image ({why}){more}. Replace or delete it, "
                                f"or pass --data.bad_images skip to leave such images out")
            if labelled:
                keep = np.setdiff1d(keep, [i for i, _ in failures])
                log.warning("Skipped %d undecodable image(s) in %s: %s", len(bad), folder,
                            ", ".join(map(str, bad)))
            else:  # Kaggle needs a row per test image: it gets predicted from a blank picture
                log.warning("%d test image(s) cannot be decoded and are predicted from a blank picture: %s",
                            len(bad), ", ".join(map(str, bad)))
        return Split(files, images, labels, keep)

    def _decode(self, name: str, files: list[Path]) -> tuple[Images, list[tuple[int, str]]]:
        """Decode `files` once (in parallel) into a uint8 array: returns it and the (index, error) failures.
        The disk cache is built once (two runs started at once: the second waits and reuses it), its
        failures file written before the array is renamed into place, so a cache that exists is complete."""
        shape = (len(files), 3, self.cache_size, self.cache_size)
        if self.cache == "memory":
            target = torch.zeros(shape, dtype=torch.uint8)
            return target, self._decode_into(target, name, files)
        key = source_key(files, self.files.root, self.cache_size)
        cropped = "" if self.decode_crop is None else f"_crop{self.decode_crop:g}"
        path = self.cache_dir / f"{self.layout.name}_{name}_{self.cache_size}px{cropped}_{key}.npy"
        failures_path = path.with_suffix(".failures.json")

        def decode(tmp: Path) -> None:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            failures = self._decode_into(torch.from_numpy(array), name, files)
            array.flush()
            del array
            write_atomically(failures_path, json.dumps(failures))

        build_cache(path, decode, lambda p: p.exists() and failures_path.exists(), f"decoded {name} images",
                    "image cache", "pass --data.cache_dir DIR or --data.cache memory")
        return MappedImages(path), [tuple(f) for f in json.loads(failures_path.read_text())]

    def _decode_into(self, target: torch.Tensor, name: str, files: list[Path]) -> list[tuple[int, str]]:
        rank_zero_info(f"Decoding {len(files)} {name} images once, at {self.cache_size} px, "
                       f"into a {self.cache} cache")
        start = time.perf_counter()
        loader = DataLoader(DecodeFiles(files, self.cache_size, self.decode_crop), batch_size=32,
                            num_workers=self.num_workers, collate_fn=list)
        failures = []
        for items in loader:
            for i, image, error in items:
                if error is None:
                    target[i] = image
                else:
                    failures.append((i, error))
        rank_zero_info(f"  done in {time.perf_counter() - start:.1f}s ({target.numel() / 2**20:.0f} MiB)")
        return failures

    # --- Lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train is None:
            self.train = self._read_split("train", labelled=True)
        if stage in ("fit", "validate", "test") and self.valid is None:
            self.valid = self._read_split("valid", labelled=True)
        if stage == "predict" and self.test is None:
            self.test = self._read_split("test", labelled=False)

    def reference_data(self, max_samples: int) -> ReferenceData:
        """Each image as a THUMBNAIL x THUMBNAIL colour thumbnail: its colours and coarse layout, which a
        linear model can use (raw pixels would give it tens of thousands of features per image)."""
        import torch.nn.functional as F

        self.setup("fit")

        def thumbnails(split: Split, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            keep = split.keep[sample_rows(len(split.keep), max_samples, seed).numpy()]
            pooled = []
            for chunk in np.array_split(keep, max(1, len(keep) // 256)):  # a few MB of pixels at a time
                images = split.images.array[chunk] if isinstance(split.images, MappedImages) else split.images[chunk]
                pooled.append(F.adaptive_avg_pool2d(torch.as_tensor(np.asarray(images)).float() / 255, THUMBNAIL))
            return torch.cat(pooled).flatten(1), split.labels[torch.as_tensor(keep)]

        return ReferenceData("classification", f"{THUMBNAIL}x{THUMBNAIL} colour thumbnails of the images",
                             *thumbnails(self.train, 0), *thumbnails(self.valid, 1),
                             len(self.train.keep), len(self.valid.keep))

    def check_test_data(self) -> None:
        """A test folder without images is found when `fit` starts (decoding them waits for `predict`)."""
        list_images(self.files.root / self.layout.test)

    def _loader(self, dataset: FoodImages, shuffle: bool = False) -> DataLoader:
        workers = self.num_workers if dataset.transform is not None else 0  # plain indexing needs no worker
        loader = EpochLoader if shuffle else DataLoader  # (training loaders shuffle)
        return loader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=shuffle and
                          len(dataset) > self.batch_size,  # a batch of one breaks BatchNorm
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(FoodImages(self.train, self.augment), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(FoodImages(self.valid))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(FoodImages(self.test, self.augment if self.tta_views else None, self.tta_views))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.prepare_batch(batch, train=self.trainer is not None and self.trainer.training)

    def prepare_batch(self, batch, train: bool = False):
        """uint8 -> normalized float on the device (a quarter of the bytes to copy); MixUp/CutMix if training."""
        images, labels = (batch, None) if isinstance(batch, torch.Tensor) else batch
        images = v2.functional.normalize(v2.functional.to_dtype(images, torch.float32, scale=True), MEAN, STD)
        if labels is None:
            return images
        if train and self.mix is not None:
            images, labels = self.mix(images, labels)  # labels become (B, 11) class probabilities
        return images, labels

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images back to [0, 1], for pictures."""
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        return (images.cpu().float() * std + mean).clamp(0, 1)

    # --- Kaggle export ----------------------------------------------------------------------
    submission_filename = "submission.csv"
    submission_columns = ["Id", "Category"]

    @property
    def num_test_samples(self) -> int:
        return len(self.test.files)

    def blend_views(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(N, 1 + views, C) class probabilities -> (N, C): `tta_weight` x clean + (1 - `tta_weight`) x mean of
        views."""
        if probabilities.dim() == 2 or probabilities.shape[1] == 1:
            return probabilities.reshape(len(probabilities), -1)
        return self.tta_weight * probabilities[:, 0] + (1 - self.tta_weight) * probabilities[:, 1:].mean(1)

    def to_submission(self, predictions: torch.Tensor) -> "pd.DataFrame":  # noqa: F821 (imported when used)
        """`Id,Category` in sorted-name order, Ids as each year's sample writes them (2022: 0001.., 2023: 0000..)."""
        import pandas as pd

        ids = np.arange(len(predictions)) + self.layout.first_id
        return pd.DataFrame({"Id": [str(i).zfill(self.layout.id_digits) for i in ids],
                             "Category": self.blend_views(predictions).argmax(-1).numpy()})
