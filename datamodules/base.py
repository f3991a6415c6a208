"""Machinery every homework's DataModule shares: user-facing data errors, finding the
data (or writing demo data), reproducible splits and in-memory batching."""

import logging
import os
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import KFold
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, random_split

log = logging.getLogger(__name__)

#: The official sample code's seed: the default split matches it, so figures compare.
SAMPLE_SEED = 5201314

Layout = TypeVar("Layout")


def available_cpus() -> int:
    """CPU cores this process may use (respects affinity masks, e.g. in containers)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class DataError(Exception):
    """A problem with the user's data or config. The CLI prints it as one line and exits non-zero."""


class HomeworkDataModule(pl.LightningDataModule, Generic[Layout]):
    """Finds a homework's data (or writes its demo set) and knows its Kaggle competition.

    `data_dir=None` means the default place, `data/<homework>`; when that holds no data the
    homework's demo set is written to `data/<homework>-demo` and used, loudly. A directory the
    user named that holds no data is an error, never a silent demo.
    """

    homework: ClassVar[str]  # "hw1", ...: names the default data dir and the W&B project
    kaggle_competition: ClassVar[str]  # for download hints and the submit command
    expected_files: ClassVar[str]  # how the data looks on disk, for error messages
    # Settings a later command (validate/test/predict with --ckpt_path) may change: the CLI restores
    # them from the checkpoint only when not given. All other data settings always come from it.
    runtime_args: ClassVar[tuple[str, ...]] = ("data_dir", "batch_size", "num_workers")

    @classmethod
    def find_layout(cls, directory: Path) -> Layout | None:
        """The data layout found in `directory`, None when it holds no data (DataError when it is malformed)."""
        raise NotImplementedError

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        """Write a small demo set in the real file format to `directory`."""
        raise NotImplementedError

    @classmethod
    def download_hint(cls) -> str:
        return (f"Get it from https://www.kaggle.com/competitions/{cls.kaggle_competition}/data or with "
                f"`kaggle competitions download -c {cls.kaggle_competition}` and unzip it")

    @classmethod
    def default_dir(cls) -> Path:
        return Path("data") / cls.homework

    @classmethod
    def demo_dir(cls) -> Path:
        return Path("data") / f"{cls.homework}-demo"

    @classmethod
    def will_use_demo(cls, data_dir: str | Path | None) -> bool:
        """Whether `data_dir` resolves to the demo set (read before anything is built, to name the run)."""
        return data_dir is None and not (cls.default_dir().is_dir() and cls.find_layout(cls.default_dir()))

    def resolve_data_dir(self, data_dir: str | Path | None) -> tuple[Path, Layout, bool]:
        """Return (directory, layout, is_demo); see the class docstring for the rules."""
        if data_dir is not None:
            path = Path(data_dir).expanduser()
            layout = self.find_layout(path) if path.is_dir() else None
            if layout is None:
                where = "does not exist" if not path.exists() else "holds none of the expected files"
                raise DataError(f"{self.homework.upper()} data not found: '{path}' {where} "
                                f"(expected {self.expected_files}). {self.download_hint()} there.")
            return path, layout, False

        default = self.default_dir()
        layout = self.find_layout(default) if default.is_dir() else None
        if layout is not None:
            return default, layout, False
        demo = self.demo_dir()
        layout = self.find_layout(demo) if demo.is_dir() else None
        if layout is None:
            self.write_demo(demo)
            layout = self.find_layout(demo)
            assert layout is not None, f"demo data written to {demo} was not recognised"
        log.warning(
            "\n%s\n  DEMO DATA: no %s data in '%s', so this run uses the generated demo set in '%s'.\n"
            "  Its scores mean nothing on Kaggle. For the real data: %s into '%s'\n"
            "  (or anywhere, then pass --data.data_dir DIR).\n%s",
            "=" * 88, self.homework.upper(), default, demo, self.download_hint(), default, "=" * 88,
        )
        return demo, layout, True


def split_indices(
    num_samples: int,
    val_ratio: float = 0.2,
    seed: int = SAMPLE_SEED,
    num_folds: int | None = None,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices: a seeded random split, or fold `fold` of `num_folds` (k-fold CV).

    The random split is `torch.utils.data.random_split` with `Generator().manual_seed(seed)`,
    exactly as the official sample code does, so the default split is the sample's split.
    """
    if num_folds is not None:
        if num_folds < 2:
            raise DataError(f"--data.num_folds must be at least 2 (got {num_folds})")
        if not 0 <= fold < num_folds:
            raise DataError(f"--data.fold must be in 0..{num_folds - 1} for {num_folds} folds (got {fold})")
        folds = KFold(n_splits=num_folds, shuffle=True, random_state=seed).split(np.arange(num_samples))
        train, val = list(folds)[fold]
        return np.asarray(train), np.asarray(val)
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"--data.val_ratio must be between 0 and 1 (got {val_ratio})")
    num_val = int(num_samples * val_ratio)
    train, val = random_split(range(num_samples), [num_samples - num_val, num_val],
                              generator=torch.Generator().manual_seed(seed))
    return np.asarray(train.indices), np.asarray(val.indices)


class TensorBatchDataset(Dataset):
    """In-memory tensors indexed by a whole batch of indices at once.

    A per-sample `TensorDataset` costs one Python call and one collate per sample; for tabular
    homeworks that overhead dwarfs the model. Here a batch is one fancy-indexing op per tensor.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        assert tensors and all(len(t) == len(tensors[0]) for t in tensors), "tensors must share their first dim"
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(index)
        return tuple(t[index] for t in self.tensors)


def batch_loader(*tensors: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    """A DataLoader over in-memory tensors that yields whole batches without per-sample work."""
    dataset = TensorBatchDataset(*tensors)
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)
