"""HW8: anomaly detection on 64x64 faces (ML2022 / ML2023, Kaggle ml2022spring-hw8).

The course hands out `trainingset.npy` (100,000 x 64 x 64 x 3 uint8 faces, all normal) and `testingset.npy`
(19,636 images, some anomalous). Both stay memory-mapped uint8 on disk; each batch is read and converted to
float on the device (the sample's [-1, 1]), so memory stays flat: the sample's `torch.from_numpy(train)` holds the
whole 1.2 GB set, and its `torch.tensor(test, dtype=torch.float32)` a 1 GB float copy of the test set.

The training set has no anomalies, so validation is built: a held-out share of the normal images, and as many
corrupted copies of them (datamodules/faces_anomalies.py), labelled 1. Its ROC AUC (`val_auroc`) is a proxy for
Kaggle's: the real test anomalies are images of another distribution, not these corruptions.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SAMPLE_SEED, EpochLoader, HomeworkDataModule, MinibatchSampler, split_indices, stream_seed
from datamodules.errors import DataError
from datamodules.faces_anomalies import KINDS, corrupt
from datamodules.faces_demo import write_demo_faces
from datamodules.lab_hooks import ReferenceScore, sample_rows

log = logging.getLogger(__name__)

TRAIN_FILE, TEST_FILE = "trainingset.npy", "testingset.npy"
IMAGE_SHAPE = (64, 64, 3)
#: validation images are made in blocks of this many normal ones (plus as many anomalies): the same set whatever
#: the batch size, rebuilt each epoch from the memory-mapped images rather than kept in memory
VAL_BLOCK = 256
AnomalyKind = Literal["noise", "occlusion", "upside_down", "tiles", "channels", "blend"]
assert set(AnomalyKind.__args__) == set(KINDS)


@dataclass(frozen=True)
class FaceFiles:
    train: Path
    test: Path


def read_images(path: Path) -> np.ndarray:
    """`path` memory-mapped (nothing read but its header), checked to hold (N, 64, 64, 3) uint8 images."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":  # (np.load would take it for a pickle)
            raise DataError(f"{path}: not a NumPy .npy file (HW8's files are .npy arrays of N x 64 x 64 x 3 uint8 "
                            f"images)")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err) or "Python objects" in str(err) or "object" in str(err):
            raise DataError(f"{path}: holds pickled Python objects, not a plain uint8 image array "
                            f"(expected N x 64 x 64 x 3 uint8, as the course hands out)") from None
        raise DataError(f"{path}: not a readable NumPy .npy file ({err})") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read it ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise DataError(f"{path}: an .npz archive, not a .npy array of N x 64 x 64 x 3 uint8 images")
    shape = tuple(array.shape)
    if array.ndim != 4 or shape[1:] != IMAGE_SHAPE:
        what = (f"a table of shape {shape} (features, not images: another homework's file?)" if array.ndim <= 2
                else f"images of shape {shape}" + (" (channels first)" if shape[1:] == (3, 64, 64) else ""))
        raise DataError(f"{path}: holds {what}; HW8's files hold N x 64 x 64 x 3 uint8 images")
    if array.dtype != np.uint8:
        raise DataError(f"{path}: holds {array.dtype} pixels; HW8's files hold uint8 pixels 0-255 "
                        f"(N x 64 x 64 x 3)")
    if len(array) == 0:
        raise DataError(f"{path}: holds no images")
    return array


class MappedFaces:
    """A uint8 image array in a .npy file, memory-mapped lazily by each process that reads it (a memmap sent to a
    DataLoader worker would be pickled as a full in-RAM copy)."""

    def __init__(self, path: Path) -> None:
        self.path, self._array = path, None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = read_images(self.path)
        return self._array

    def __len__(self) -> int:
        return len(self.array)

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        """Images `indices` (sorted, for sequential reads) as one uint8 (B, 64, 64, 3) tensor."""
        return torch.from_numpy(np.ascontiguousarray(self.array[np.asarray(indices)]))

    def __getstate__(self) -> dict:
        return {"path": self.path, "_array": None}


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 64, 64, 3) -> float (B, 3, 64, 64) in [-1, 1], the sample's `2 * x / 255 - 1`."""
    # (in place on a fresh copy: three full-size temporaries less per batch, the same values bit for bit)
    return images.permute(0, 3, 1, 2).to(torch.float32, copy=True).mul_(2.0).div_(255.0).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_float`, rounded: (B, 3, 64, 64) in [-1, 1] -> uint8 (B, 64, 64, 3)."""
    return images.clamp(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class FaceBatches(Dataset):
    """Whole batches of images `rows[index]` read from the memory-mapped file: an item is an index tensor."""

    def __init__(self, images: MappedFaces, rows: np.ndarray) -> None:
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.images.rows(np.sort(self.rows[index.numpy()]))


class ValidationFaces(Dataset):
    """The labelled validation set, block by block: VAL_BLOCK held-out normal images and a corrupted copy of each
    (labels 0 and 1; `kinds` -1 for a normal image, else the anomaly kind's position in `names`). Block j is drawn
    from (seed, j) alone, so every epoch, run and batch size validates on the same images."""

    def __init__(self, images: MappedFaces, rows: np.ndarray, names: list[str], seed: int) -> None:
        self.images, self.rows, self.names, self.seed = images, np.sort(rows), list(names), seed

    def __len__(self) -> int:
        return -(-len(self.rows) // VAL_BLOCK)

    @property
    def num_samples(self) -> int:
        """Images in the set (each item is a block of them: the advisor counts samples, not items)."""
        return 2 * len(self.rows)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= j < len(self):
            raise IndexError(f"validation block {j} of {len(self)}")  # (also ends a `for` over the set)
        normal = self.images.rows(self.rows[j * VAL_BLOCK:(j + 1) * VAL_BLOCK])
        generator = torch.Generator().manual_seed(stream_seed(self.seed, j))
        kinds = torch.randint(0, len(self.names), (len(normal),), generator=generator)
        anomalies = to_uint8(corrupt(to_float(normal), kinds, self.names, generator))
        labels = torch.cat([torch.zeros(len(normal), dtype=torch.long), torch.ones(len(normal), dtype=torch.long)])
        return torch.cat([normal, anomalies]), labels, torch.cat([torch.full((len(normal),), -1), kinds])


class FacesDataModule(HomeworkDataModule[FaceFiles]):
    """HW8's images, memory-mapped uint8, converted per batch; a built validation set of normal and corrupted
    images whose ROC AUC picks the checkpoint (a proxy for Kaggle's: see the module docstring).

    Args:
        data_dir: Folder with trainingset.npy and testingset.npy (or a folder one level above it). None: data/hw8,
            else a demo set.
        batch_size: Images per training (and prediction) batch; the sample's is 2000.
        num_workers: Data loader processes (0: reading a batch from the memory-mapped file takes the main
            process a few milliseconds).
        val_ratio: Share of the training images held out as normal validation images (each also gets a
            corrupted copy, an anomaly).
        val_anomalies: Kinds of generated validation anomalies: noise, occlusion, upside_down, tiles, channels
            (blend, two faces averaged, is left out by default: smoother than either face, it is reconstructed
            better than a normal face by every reconstruction-error detector, a blind spot of the method).
        seed: Seed of the held-out split and of the generated anomalies.
    """

    homework = "hw8"
    kaggle_competition = "ml2022spring-hw8"
    expected_files = f"{TRAIN_FILE} and {TEST_FILE} (N x 64 x 64 x 3 uint8)"
    split_args = ("val_ratio", "seed", "val_anomalies")
    submission_filename = "prediction.csv"
    submission_columns = ["ID", "score"]

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        val_ratio: float = 0.1,
        val_anomalies: list[AnomalyKind] = ["noise", "occlusion", "upside_down", "tiles", "channels"],  # noqa: B006
        seed: int = SAMPLE_SEED,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1:
            raise DataError(f"--data.batch_size must be positive (got {batch_size})")
        if not val_anomalies:
            raise DataError("--data.val_anomalies needs at least one kind: the validation ROC AUC needs anomalies")
        if not 0.0 < val_ratio < 1.0:
            raise DataError(f"--data.val_ratio must be between 0 and 1 (got {val_ratio})")
        self.data_dir, self.files, self.is_demo = self.resolve_data_dir(data_dir)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.val_ratio, self.val_anomalies = val_ratio, list(dict.fromkeys(val_anomalies))
        self.train_images, self.test_images = MappedFaces(self.files.train), MappedFaces(self.files.test)
        self.train_rows: np.ndarray | None = None
        self.val_rows: np.ndarray | None = None

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> FaceFiles | None:
        train, test = directory / TRAIN_FILE, directory / TEST_FILE
        if not train.is_file() and not test.is_file():
            return None
        if not (train.is_file() and test.is_file()):
            present, missing = (train, test) if train.is_file() else (test, train)
            raise DataError(f"{directory}: holds {present.name} but not {missing.name} (HW8 needs both)")
        read_images(train)  # (headers only: a wrong file is one line now, not a traceback later)
        read_images(test)
        return FaceFiles(train, test)

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        write_demo_faces(directory)

    def check_test_data(self) -> None:
        read_images(self.files.test)

    # --- the split -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate", "test") and self.val_rows is None:
            count = len(self.train_images)
            if int(count * self.val_ratio) < 1 or count - int(count * self.val_ratio) < 1:
                raise DataError(f"{self.files.train}: {count} image(s) cannot be split into training and "
                                f"validation images with --data.val_ratio {self.val_ratio}")
            train, val = split_indices(count, self.val_ratio, self.seed)
            self.train_rows, self.val_rows = np.sort(train), np.sort(val)

    @property
    def validation_set(self) -> ValidationFaces:
        return ValidationFaces(self.train_images, self.val_rows, self.val_anomalies, self.seed)

    # --- loaders ---------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        sampler = MinibatchSampler(len(self.train_rows), self.batch_size, shuffle=True)
        return EpochLoader(FaceBatches(self.train_images, self.train_rows), sampler=sampler, batch_size=None,
                           num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.validation_set, batch_size=None, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        rows = np.arange(len(self.test_images))
        sampler = MinibatchSampler(len(rows), self.batch_size, shuffle=False)
        return DataLoader(FaceBatches(self.test_images, rows), sampler=sampler, batch_size=None,
                          num_workers=self.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 -> float on the device (a quarter of the bytes to copy)."""
        if isinstance(batch, torch.Tensor):
            return to_float(batch)
        images, *rest = batch
        return (to_float(images), *rest)

    def test_rows(self, indices) -> torch.Tensor:
        """Test images `indices`, in that order, as (B, 3, 64, 64) floats in [-1, 1] (for pictures)."""
        indices = np.asarray(indices)
        order = np.argsort(indices, kind="stable")
        images = self.test_images.rows(indices[order])
        return to_float(images[torch.from_numpy(np.argsort(order, kind="stable"))])

    @staticmethod
    def denormalize(images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images back to [0, 1], for pictures."""
        return ((images.detach().cpu().float() + 1) / 2).clamp(0, 1)

    # --- the lab's reference ---------------------------------------------------------------------
    def reference_score(self, max_samples: int) -> ReferenceScore:
        """PCA's reconstruction error as the anomaly score: principal components fitted on at most `max_samples`
        training images (sampled with a fixed seed), scored on the whole validation set in its ROC AUC."""
        from sklearn.decomposition import PCA
        from sklearn.metrics import roc_auc_score

        self.setup("fit")
        rows = self.train_rows[sample_rows(len(self.train_rows), max_samples, 0).numpy()]
        x = np.concatenate([to_float(self.train_images.rows(chunk)).flatten(1).numpy()
                            for chunk in np.array_split(rows, max(1, len(rows) // 512))])
        components = min(64, len(x) - 1, x.shape[1])
        pca = PCA(n_components=components, random_state=0).fit(x)
        del x
        scores, labels = [], []
        for images, label, _ in self.validation_set:
            flat = to_float(images).flatten(1).numpy()
            scores.append(np.sqrt(((pca.inverse_transform(pca.transform(flat)) - flat) ** 2).sum(1)))
            labels.append(label.numpy())
        score = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
        return ReferenceScore(f"PCA reconstruction error ({components} components, fitted on {len(rows)} "
                              f"training images)", "val_auroc", float(score))

    # --- Kaggle export ---------------------------------------------------------------------------
    @property
    def num_test_samples(self) -> int:
        return len(self.test_images)

    def to_submission(self, predictions: torch.Tensor) -> "pd.DataFrame":  # noqa: F821 (imported when used)
        """`ID,score` as the sample's `df.to_csv(out_file, index_label='ID')` writes it: ids 0, 1, ... in the test
        file's order, higher scores more anomalous."""
        import pandas as pd

        scores = predictions.detach().cpu().float().numpy().reshape(-1)
        return pd.DataFrame({"ID": np.arange(len(scores)), "score": scores})
