"""HW11: domain adaptation from real photos (source, labelled) to hand drawings (target, unlabelled, also the
test set), in the course's `real_or_drawing` layout.

Every image is decoded once into a uint8 (N, 1, 32, 32) array (100,000 drawings: 100 MB): the photos through
the sample's grayscale + Canny, the drawings grayscale, 28 px resized to 32 as the sample does. Each training
step gets a batch of photos with their labels and a batch of drawings without (Lightning's CombinedLoader,
"min_size" as the sample's `zip`: an epoch is one pass over the photos, the drawings reshuffled each epoch).
The demo set: real_or_drawing_demo.py.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.base import EpochLoader, HomeworkDataModule, available_cpus, split_indices, stream_seed
from datamodules.errors import DataError
from datamodules.lab_hooks import Remedy, sample_rows
from datamodules.real_or_drawing_demo import DEMO_CLASSES, write_demo_real_or_drawing

log = logging.getLogger(__name__)

#: The course's ten classes, in the order of the folders train_data/0 .. train_data/9.
CLASSES = ("horse", "bed", "clock", "apple", "cat", "plane", "television", "dog", "dolphin", "spider")
IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg"}
#: The network's input size: the photos' 32 px (the sample resizes the 28 px drawings to it).
IMAGE_SIZE = 32
#: The demo set's labels of the drawings (Kaggle keeps the real ones).
DEMO_LABELS = "target_labels.csv"


@dataclass(frozen=True)
class RealOrDrawingFiles:
    root: Path  # the folder holding train_data/ and test_data/


def list_images(folder: Path) -> list[Path]:
    """The files of `folder` in sorted-name order (the order of the sample's ImageFolder, so of Kaggle's ids);
    a file that is not an image is an error naming it, hidden files are skipped."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: not an image (expected .bmp files, as the course's); move it out of {folder}")
    if not files:
        raise DataError(f"{folder}: no images in this folder")
    return files


def decode(files: list[Path], what: str, canny: tuple[int, int] | None = None) -> torch.Tensor:
    """The images as uint8 (N, 1, 32, 32): grayscale (PIL's, as the sample's transforms.Grayscale), then Canny
    edges when `canny` gives its thresholds (at the image's own size, as the sample), then resized to 32 px.
    All of them must share one size (the course's photos are 32 px, its drawings 28 px)."""
    import cv2
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    size = None
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                gray = image.convert("L")
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{path}: cannot decode this image ({type(err).__name__}: {err})") from None
        if size is None:
            size, first = gray.size, path
        elif gray.size != size:
            raise DataError(f"{path}: {gray.size[0]}x{gray.size[1]} pixels, but the other {what} are "
                            f"{size[0]}x{size[1]} (like {first.name}); the course's {what} all share one size")
        pixels = np.asarray(gray)
        if canny is not None:
            pixels = cv2.Canny(pixels, *canny)
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE):  # bilinear with antialias, as transforms.Resize on PIL
            pixels = np.asarray(Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
        out[i, 0] = pixels
    return torch.from_numpy(out)


def read_target_labels(path: Path, num_target: int, num_classes: int) -> torch.Tensor:
    """A labelled copy of the target set, `id,label` (the submission's format), for the honest check."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"--data.target_labels {path}: no such file")
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"--data.target_labels {path}: not a CSV file ({err})") from None
    if list(frame.columns[:2]) != ["id", "label"]:
        raise DataError(f"--data.target_labels {path}: expected the columns id,label (got "
                        f"{','.join(map(str, frame.columns))})")
    ids, labels = frame["id"], frame["label"]
    if ids.dtype.kind != "i" or labels.dtype.kind != "i" or sorted(ids) != list(range(num_target)):
        raise DataError(f"--data.target_labels {path}: needs one row per test image, ids 0..{num_target - 1} "
                        f"and whole-number labels")
    if not labels.between(0, num_classes - 1).all():
        raise DataError(f"--data.target_labels {path}: labels must be 0..{num_classes - 1}")
    out = torch.empty(num_target, dtype=torch.long)
    out[torch.as_tensor(ids.to_numpy().copy())] = torch.as_tensor(labels.to_numpy().copy())
    return out


class DomainImages(Dataset):
    """uint8 (1, 32, 32) images (and labels), augmented per image; the target domain draws its augmentation
    from a stream of its own (`salt`), so a photo and a drawing at the same place in their batches are not
    rotated alike (EpochLoader seeds each item by its position alone)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, transform=None, salt: int = 0) -> None:
        self.images, self.labels, self.transform, self.salt = images, labels, transform, salt

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            if self.salt:
                torch.manual_seed(stream_seed(torch.initial_seed(), self.salt))
            image = self.transform(image)
        return image if self.labels is None else (image, self.labels[index])


class RealOrDrawingDataModule(HomeworkDataModule[RealOrDrawingFiles]):
    """Photos with labels (source) and drawings without (target) from `real_or_drawing/`.

    Training: each step a batch of photos and a batch of drawings (Lightning's CombinedLoader), both
    augmented alike (`hflip`, `rotation` as the sample; `translate`, `scale` beyond it). Validation: held-out
    photos (`val_ratio`) and up to `val_target_samples` drawings, unlabelled as far as training knows; their
    labels, where a labelled copy is given (`target_labels`; the demo set has one), score the target accuracy.
    `predict`: every drawing, in file-name order, as the sample's `id,label` CSV.

    Args:
        data_dir: Folder holding real_or_drawing/ (or its train_data/ and test_data/). None: data/hw11, else a demo set.
        batch_size: Photos per step; as many drawings go with them (the sample: 32 + 32).
        num_workers: Data loader processes per domain; None: the cores but one (at most 4).
        canny: The sample's Canny edge thresholds on the photos (low, high); null: grayscale photos, no edges.
        hflip: Probability of a horizontal flip (both domains).
        rotation: Random rotation in degrees, plus or minus (both domains; the sample's 15).
        translate: Random shift, as a fraction of the image side (both domains; 0: none).
        scale: Random zoom range, e.g. [0.8, 1.2] (both domains); null: none.
        val_ratio: Share of the photos held out for validation.
        val_target_samples: Drawings scored at each validation (a fixed sample; the domain classifier's accuracy,
            the entropy of the predictions and, with labels, the target accuracy).
        target_labels: CSV `id,label` of the drawings (a labelled target set of your own) for the target
            accuracy; None: the demo set's own, none on the real data.
        net_width: Channels of the feature extractor's first layer (then 2x, 4x, 4x, 8x); None: the sample's
            64 on the course's data, 16 on the demo set (so its fit takes a minute or two on a CPU).
        seed: Seed of the validation split and of the drawings' validation sample.
    """

    homework = "hw11"
    kaggle_competition = "ml2022spring-hw11"
    expected_files = "real_or_drawing/train_data/<0..9>/<n>.bmp and real_or_drawing/test_data/0/<00000>.bmp"
    num_classes = 10
    runtime_args = HomeworkDataModule.runtime_args + ("target_labels", "val_target_samples")
    split_args = ("val_ratio", "seed")
    submission_filename = "submission.csv"
    submission_columns = ["id", "label"]
    remedies = (
        Remedy("overfitting", "augmentation", "--data.rotation", plus=10, start=15, most=30),
        Remedy("overfitting", "augmentation", "--data.translate", plus=0.1, start=0.1, most=0.2),
        Remedy("bias", "a wider network", "--data.net_width", times=2, most=128),
    )

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        canny: tuple[int, int] | None = (170, 300),
        hflip: float = 0.5,
        rotation: float = 15.0,
        translate: float = 0.0,
        scale: tuple[float, float] | None = None,
        val_ratio: float = 0.1,
        val_target_samples: int = 2000,
        target_labels: str | None = None,
        net_width: int | None = None,
        seed: int = 5201314,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir, self.files, self.is_demo = self.resolve_data_dir(data_dir)
        if batch_size < 2:
            raise DataError(f"--data.batch_size must be at least 2 (got {batch_size}; BatchNorm needs two)")
        if not 0 <= hflip <= 1 or rotation < 0 or not 0 <= translate < 1:
            raise DataError("--data.hflip must be 0..1, --data.rotation at least 0, --data.translate 0..1 "
                            f"(got {hflip}, {rotation}, {translate})")
        if val_target_samples < 1:
            raise DataError(f"--data.val_target_samples must be positive (got {val_target_samples})")
        self.class_names = DEMO_CLASSES if self.is_demo else CLASSES
        self.net_width = net_width or (16 if self.is_demo else 64)
        self.save_hyperparameters({"net_width": self.net_width})  # resolved; the model's must agree
        self.batch_size, self.canny, self.val_ratio, self.seed = batch_size, canny, val_ratio, seed
        self.num_workers = max(1, min(4, available_cpus() - 1)) if num_workers is None else num_workers
        self.val_target_samples = val_target_samples
        self.target_labels_path = (Path(target_labels).expanduser() if target_labels else
                                   self.files.root / DEMO_LABELS if self.is_demo else None)
        steps = [v2.RandomHorizontalFlip(hflip)] if hflip > 0 else []
        if rotation or translate or scale:  # fill with 0: black, as the sample's RandomRotation(fill=(0,))
            steps.append(v2.RandomAffine(rotation, (translate, translate) if translate else None, scale, fill=0))
        self.augment = v2.Compose(steps) if steps else None
        self.source: tuple[torch.Tensor, torch.Tensor] | None = None
        self.target: torch.Tensor | None = None
        self.target_labels: torch.Tensor | None = None

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> RealOrDrawingFiles | None:
        train, test = directory / "train_data", directory / "test_data"
        if not train.is_dir() and not test.is_dir():
            return None
        if not (train.is_dir() and test.is_dir()):
            present, missing = (train, test) if train.is_dir() else (test, train)
            raise DataError(f"{directory}: holds {present.name}/ but not {missing.name}/ "
                            f"(expected {cls.expected_files})")
        folders = [train / str(c) for c in range(cls.num_classes)]
        missing = [f.name for f in folders if not f.is_dir()]
        if missing:
            raise DataError(f"{train}: class folder {', '.join(m + '/' for m in missing)} missing (expected one "
                            f"folder per class, 0/ .. {cls.num_classes - 1}/)")
        if not (test / "0").is_dir():
            raise DataError(f"{test}: expected the drawings in {test / '0'}/ (as the course's zip has them)")
        return RealOrDrawingFiles(directory)

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        write_demo_real_or_drawing(directory)

    def check_test_data(self) -> None:
        """The drawings are read at `fit` already (they are the target domain): a bad one is found then."""
        list_images(self.files.root / "test_data" / "0")

    # --- decoding -----------------------------------------------------------------------------
    def _read_source(self) -> tuple[torch.Tensor, torch.Tensor]:
        files, labels = [], []
        for label in range(self.num_classes):
            found = list_images(self.files.root / "train_data" / str(label))
            files += found
            labels += [label] * len(found)
        edges = f", Canny edges {self.canny[0]}/{self.canny[1]}" if self.canny else ""
        log.info("Decoding %d photos once (grayscale%s)", len(files), edges)
        return decode(files, "photos", tuple(self.canny) if self.canny else None), torch.tensor(labels)

    def _read_target(self) -> torch.Tensor:
        files = list_images(self.files.root / "test_data" / "0")
        self.target_files = files
        log.info("Decoding %d drawings once (grayscale, %d px)", len(files), IMAGE_SIZE)
        return decode(files, "test images")

    def setup(self, stage: str) -> None:
        if self.target is None:  # every stage needs the drawings: training adapts to them, predict labels them
            self.target = self._read_target()
            if self.target_labels_path is not None:
                self.target_labels = read_target_labels(self.target_labels_path, len(self.target), self.num_classes)
        if stage in ("fit", "validate") and self.source is None:
            self.source = self._read_source()
            self.train_idx, self.val_idx = split_indices(len(self.source[1]), self.val_ratio, self.seed)
            self.target_val_idx = sample_rows(len(self.target), self.val_target_samples, self.seed)

    # --- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        workers = self.num_workers if dataset.transform is not None else 0  # plain indexing needs no worker
        loader = EpochLoader if shuffle else DataLoader
        return loader(dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle, drop_last=shuffle,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> CombinedLoader:
        images, labels = self.source
        if len(self.train_idx) < self.batch_size or len(self.target) < self.batch_size:
            raise DataError(f"--data.batch_size {self.batch_size}: more than the {len(self.train_idx)} training "
                            f"photos or {len(self.target)} drawings; pass a smaller one")
        source = DomainImages(images[self.train_idx], labels[self.train_idx], self.augment)
        target = DomainImages(self.target, None, self.augment, salt=1)
        return CombinedLoader({"source": self._loader(source, shuffle=True),
                               "target": self._loader(target, shuffle=True)}, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        """[held-out photos with labels, a sample of drawings (with their labels where given, else -1)]."""
        images, labels = self.source
        index = self.target_val_idx
        target_labels = self.target_labels[index] if self.target_labels is not None else torch.full((len(index),), -1)
        return [self._loader(DomainImages(images[self.val_idx], labels[self.val_idx]), batch_size=256),
                self._loader(DomainImages(self.target[index], target_labels), batch_size=256)]

    def predict_dataloader(self) -> DataLoader:
        return self._loader(DomainImages(self.target, None), batch_size=256)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 -> float in [0, 1] on the device (the sample's ToTensor), a quarter of the bytes to copy; the
        training step's {"source": (images, labels), "target": images} alike."""
        if isinstance(batch, torch.Tensor):
            return batch.float().div_(255) if batch.dtype == torch.uint8 else batch
        if isinstance(batch, dict):
            return {key: self.on_after_batch_transfer(value, dataloader_idx) for key, value in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.on_after_batch_transfer(x, dataloader_idx) for x in batch)
        return batch

    # --- Kaggle export ------------------------------------------------------------------------
    @property
    def num_test_samples(self) -> int:
        return len(self.target)

    def to_submission(self, predictions: torch.Tensor) -> "pd.DataFrame":  # noqa: F821 (imported when used)
        """`id,label`, ids 0, 1, ... in file-name order, as the sample's DataFrame writes them."""
        import pandas as pd

        return pd.DataFrame({"id": np.arange(len(predictions)), "label": predictions.argmax(-1).numpy()})
