"""Machinery every homework's DataModule shares: user-facing data errors, finding the
data (or writing demo data), reproducible splits and in-memory batching."""

import logging
import math
import os
import re
from pathlib import Path
from typing import ClassVar, Generic, Literal, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, random_split

from datamodules.atomic import build_once
from datamodules.errors import DataError
from datamodules.workspace import home
from datamodules.lab_hooks import ReferenceData, ReferenceScore, Remedy

log = logging.getLogger(__name__)

#: The official sample code's seed: the default split matches it, so figures compare.
SAMPLE_SEED = 5201314

Layout = TypeVar("Layout")


#: cgroup v2's CPU quota ("max 100000" or "400000 100000": 4 CPUs), as a container (Kaggle, Docker) sets it
CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")


def provided(cls: type, name: str, base: type) -> bool:
    """Whether `cls` gets `name` from a class below `base` (`base`'s own stub, an annotation without a value or
    Lightning's default that raises do not count)."""
    owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
    return owner is not None and owner is not base and issubclass(owner, base)


def available_cpus() -> int:
    """CPU cores this process may use: its affinity mask, and a container's CPU quota, which the mask does not show
    (a container may see all of the host's cores but be given the time of 4)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = CPU_QUOTA.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 here, or a format this does not know: the mask alone
        pass
    return cores


class HomeworkDataModule(pl.LightningDataModule, Generic[Layout]):
    """Finds a homework's data (or writes its demo set) and knows its Kaggle competition.

    `data_dir=None` means the default place, `data/<homework>`; when that holds no data the
    homework's demo set is written to `data/<homework>-demo` and used, loudly. A directory the
    user named that holds no data is an error, never a silent demo.
    """

    # --- what every homework declares (checked when its class is defined: `__init_subclass__`) ---------------
    homework: ClassVar[str]  # "hw1", ...: names the default data dir, the runs folder and the W&B project
    kaggle_competition: ClassVar[str | None]  # for download hints and the submit command; None: not on Kaggle
    expected_files: ClassVar[str]  # how the data looks on disk, for error messages
    submission_filename: ClassVar[str]  # the file `predict` writes (pred.csv, submission.csv, ...)
    submission_columns: ClassVar[list[str] | None]  # its CSV header; None: a text file, one line per test sample
    # set by `resolve_data_dir`, which each homework's `__init__` calls after `self.save_hyperparameters()`
    data_dir: Path
    is_demo: bool

    # Settings a later command (validate/test/predict with --ckpt_path) may change: the CLI restores
    # them from the checkpoint only when not given. All other data settings always come from it.
    runtime_args: ClassVar[tuple[str, ...]] = ("data_dir", "batch_size", "num_workers")

    #: The data options that set how much memory one step takes, the batch first: a CUDA out-of-memory error names
    #: them and halves the first (with gradient accumulation keeping the effective batch), DDP's line multiplies it.
    memory_args: ClassVar[tuple[str, ...]] = ("batch_size",)

    #: The data settings that decide which samples are validated on: runs that share them (and the data
    #: directory) have comparable validation scores, which is what `--ckpt_path best` picks among.
    split_args: ClassVar[tuple[str, ...]] = ("val_ratio", "seed", "num_folds", "fold")

    #: The course's Google-Drive files ({file name: file id}) its sample code downloads: the notebook offers them.
    course_files: ClassVar[dict[str, str]] = {}

    #: The lecture's remedies that are this DataModule's flags (datamodules/lab_hooks.py); the task declares its own.
    remedies: ClassVar[tuple[Remedy, ...]] = ()

    def reference_data(self, max_samples: int) -> ReferenceData | None:
        """The data of the methodology advisor's simple reference model, after `setup("fit")`: at most
        `max_samples` training and validation rows, sampled with a fixed seed (datamodules/lab_hooks.py). None: no
        simple model applies to this homework's data, which the diagnosis says."""
        return None

    def reference_score(self, max_samples: int) -> ReferenceScore | None:
        """A reference model the homework scores itself, in its own metric, after `setup("fit")`
        (datamodules/lab_hooks.py); None: the lab uses `reference_data()` or says there is no reference."""
        return None

    #: The members above without a value and the methods below that raise NotImplementedError: a homework's
    #: class that lacks one is a TypeError where it is defined (at import), not a failure at `predict`.
    required: ClassVar[tuple[str, ...]] = (
        "homework", "kaggle_competition", "expected_files", "submission_filename", "submission_columns",
        "find_layout", "write_demo", "num_test_samples", "to_submission",
        "setup", "train_dataloader", "val_dataloader", "predict_dataloader")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in cls.required if not provided(cls, name, HomeworkDataModule)]
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)} (each homework's DataModule does: "
                            f"see datamodules/base.py HomeworkDataModule and docs/architecture.md)")
        if not re.fullmatch(r"hw\d+", cls.homework):
            raise TypeError(f"{cls.__name__}.homework is {cls.homework!r}; it names the homework: 'hw8', ...")

    @property
    def num_test_samples(self) -> int:
        """How many test samples the file `predict` writes must have (one row or line each)."""
        raise NotImplementedError

    def to_submission(self, predictions) -> "pandas.DataFrame | list[str]":  # noqa: F821 (imported when used)
        """The Kaggle file for `collate_predictions`' result: a DataFrame with `submission_columns`, or the lines
        of a text file (callbacks/submission.py validates and writes it)."""
        raise NotImplementedError

    @classmethod
    def find_layout(cls, directory: Path) -> Layout | None:
        """The data layout held directly in `directory`, None when it holds no data (DataError when it is
        malformed). `locate` also looks one folder down, so subclasses check `directory` itself only."""
        raise NotImplementedError

    @classmethod
    def locate(cls, directory: Path) -> Layout | None:
        """The layout in `directory` or in one of its sub-folders (a Kaggle zip often unpacks into one):
        the same finding rule for every homework."""
        if not directory.is_dir():
            return None
        layout = cls.find_layout(directory)
        if layout is not None:
            return layout
        for child in sorted(d for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".")):
            layout = cls.find_layout(child)
            if layout is not None:
                return layout
        return None

    def check_test_labels(self) -> None:
        """Raise DataError saying why `test` cannot score (the CLI calls it before `test`). Kaggle keeps the
        test labels, so by default there is nothing to score: `test` would only re-score the validation split.
        A homework whose test files can carry labels (HW5's references) overrides this."""
        raise DataError(f"{self.homework}'s test set has no labels (Kaggle keeps them), so `test` has nothing to "
                        f"score; `validate` scores the validation split")

    def check_test_data(self) -> None:
        """Raise DataError for a test file `predict` could not use. The CLI calls it when `fit` starts,
        so a broken test file is found before training, not after it."""

    def collate_predictions(self, batches: list):
        """The per-batch outputs of `predict_step` as one object for `to_submission` (default: concatenated)."""
        return torch.cat([b.detach().cpu() for b in batches])

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        """Write a small demo set in the real file format to `directory`."""
        raise NotImplementedError

    @classmethod
    def ensure_demo(cls, directory: Path) -> None:
        """Write the demo set to `directory` unless it holds one: once, atomically (a run started at the same
        moment waits for it, and none reads a half-written set; see datamodules.atomic)."""
        def holds_demo(path: Path) -> bool:
            try:
                return cls.locate(path) is not None
            except DataError:  # a set left half-written by an older version: written again
                return False

        build_once(directory, cls.write_demo, holds_demo, directory=True, what="writing the demo set")

    @classmethod
    def download_hint(cls) -> str:
        return (f"Get it from https://www.kaggle.com/competitions/{cls.kaggle_competition}/data or with "
                f"`kaggle competitions download -c {cls.kaggle_competition}` and unzip it")

    @classmethod
    def default_dir(cls) -> Path:
        return home() / "data" / cls.homework

    @classmethod
    def demo_dir(cls) -> Path:
        return home() / "data" / f"{cls.homework}-demo"

    @classmethod
    def split_settings(cls, settings) -> dict:
        """The `split_args` among `settings` (the parsed `data` config, or a DataModule's hparams)."""
        return {key: settings.get(key) for key in cls.split_args if key in settings}

    @classmethod
    def resolved_dir(cls, data_dir: str | Path | None) -> Path:
        """The directory `data_dir` resolves to (see `resolve_data_dir`), without writing the demo set."""
        if data_dir is not None:
            return Path(data_dir).expanduser()
        return cls.default_dir() if cls.locate(cls.default_dir()) is not None else cls.demo_dir()

    @classmethod
    def will_use_demo(cls, data_dir: str | Path | None) -> bool:
        """Whether `data_dir` resolves to the demo set (read before anything is built, to name the run)."""
        if data_dir is None and cls.locate(cls.default_dir()) is None:
            cls.check_not_zipped(cls.default_dir())
            return True
        return False

    @classmethod
    def check_not_zipped(cls, directory: Path) -> None:
        """A folder with no data but a zip (what `kaggle competitions download -p DIR` leaves): a DataError naming
        the zip and the command that unpacks it, never the demo set in its place."""
        zips = sorted(directory.glob("*.zip")) if directory.is_dir() else []
        if zips:
            raise DataError(f"{directory} holds {', '.join(z.name for z in zips)} but no unpacked "
                            f"{cls.homework.upper()} data: unpack it with `python -m zipfile -e {zips[0]} {directory}` "
                            f"(then run this again)")

    def resolve_data_dir(self, data_dir: str | Path | None) -> tuple[Path, Layout, bool]:
        """Return (directory, layout, is_demo) and set `data_dir` and `is_demo`; see the class docstring for
        the rules."""
        if not self.hparams:
            raise TypeError(f"{type(self).__name__}.__init__ must call self.save_hyperparameters() before "
                            f"resolve_data_dir: a checkpoint keeps the data settings from it")
        self.data_dir, layout, self.is_demo = self._resolve_data_dir(data_dir)
        return self.data_dir, layout, self.is_demo

    def _resolve_data_dir(self, data_dir: str | Path | None) -> tuple[Path, Layout, bool]:
        if data_dir is not None:
            path = Path(data_dir).expanduser()
            layout = self.locate(path)
            if layout is None:
                self.check_not_zipped(path)
                where = "does not exist" if not path.exists() else "holds none of the expected files"
                raise DataError(f"{self.homework.upper()} data not found: '{path}' {where} "
                                f"(expected {self.expected_files}). {self.download_hint()} there.")
            return path, layout, False

        default = self.default_dir()
        layout = self.locate(default)
        if layout is not None:
            return default, layout, False
        self.check_not_zipped(default)
        demo = self.demo_dir()
        self.ensure_demo(demo)
        layout = self.locate(demo)
        assert layout is not None, f"demo data written to {demo} was not recognised"
        if rank_zero_only.rank == 0:  # (said once, not by each process of a multi-device run)
            log.warning(
                "\n%s\n  DEMO DATA: no %s data in '%s', so this run uses the generated demo set in '%s'.\n"
                "  Its scores mean nothing on Kaggle. For the real data: %s into '%s'\n"
                "  (or anywhere, then pass --data.data_dir DIR).\n%s",
                "=" * 88, self.homework.upper(), default, demo, self.download_hint(), default, "=" * 88,
            )
        return demo, layout, True


def check_folds(num_folds: int | None, fold: int | None) -> None:
    """k-fold settings come as a pair: a lone `fold` would otherwise be silently ignored."""
    if num_folds is None and fold is not None:
        raise DataError(f"--data.fold {fold} needs --data.num_folds K (how many folds to split into)")
    if num_folds is not None:
        if num_folds < 2:
            raise DataError(f"--data.num_folds must be at least 2 (got {num_folds})")
        if fold is None:
            raise DataError(f"--data.num_folds {num_folds} needs --data.fold 0..{num_folds - 1} (or all, to "
                            f"train every fold)")
        if not 0 <= fold < num_folds:
            raise DataError(f"--data.fold must be in 0..{num_folds - 1} for {num_folds} folds (got {fold})")


def split_indices(
    num_samples: int,
    val_ratio: float = 0.2,
    seed: int = SAMPLE_SEED,
    num_folds: int | None = None,
    fold: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices: a seeded random split, or fold `fold` of `num_folds` (k-fold CV).

    The random split is `torch.utils.data.random_split` with `Generator().manual_seed(seed)`,
    exactly as the official sample code does, so the default split is the sample's split.
    """
    check_folds(num_folds, fold)
    if num_folds is not None:
        from sklearn.model_selection import KFold

        if num_folds > num_samples:  # (scikit-learn's own refusal is a traceback)
            raise DataError(f"--data.num_folds {num_folds}: the training data has {num_samples} rows, so at most "
                            f"{num_samples} folds (each fold validates on at least one row)")

        folds = KFold(n_splits=num_folds, shuffle=True, random_state=seed).split(np.arange(num_samples))
        train, val = list(folds)[fold]
        return np.asarray(train), np.asarray(val)
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"--data.val_ratio must be between 0 and 1 (got {val_ratio})")
    num_val = int(num_samples * val_ratio)
    if num_val == 0 or num_val == num_samples:  # an empty validation (or training) split trains on nothing sure
        needed = next(n for n in range(2, 10**9) if 0 < int(n * val_ratio) < n)
        raise DataError(f"--data.val_ratio {val_ratio}: the training data has {num_samples} row(s); at least "
                        f"{needed} are needed for a validation split of {val_ratio}")
    train, val = random_split(range(num_samples), [num_samples - num_val, num_val],
                              generator=torch.Generator().manual_seed(seed))
    return np.asarray(train.indices), np.asarray(val.indices)


def length_batches(lengths, max_padded: int, max_items: int | None = None, order=None) -> list[np.ndarray]:
    """Indices in `order` (default: sorted by length) cut into consecutive batches whose padded size
    (items x longest) stays within `max_padded`, and at most `max_items` long; an item longer than
    `max_padded` gets a batch of its own. Little of each batch is padding: HW4's whole utterances,
    HW5's token-capped sentence batches (fairseq's `--max-tokens`)."""
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable") if order is None else np.asarray(order)
    batches, start, longest = [], 0, 0
    for i, index in enumerate(order):
        longest_with, count = max(longest, int(lengths[index])), i - start + 1
        if i > start and (count * longest_with > max_padded or (max_items is not None and count > max_items)):
            batches.append(order[start:i])
            start, longest_with = i, int(lengths[index])
        longest = longest_with
    if start < len(order):
        batches.append(order[start:])
    return batches


def stream_seed(*keys: int) -> int:
    """A 63-bit seed from integers such as (seed, epoch, position): the same in every process and run."""
    return hash(tuple(int(k) for k in keys)) & (2**63 - 1)  # ints hash to themselves: no per-process salt


class _Positioned(Sampler):
    """The wrapped sampler's items tagged with a seed from (run seed, epoch, position in the epoch), for
    `_Reseeded`. `set_epoch` reaches the wrapped sampler too (HW5's batches are drawn per epoch)."""

    def __init__(self, sampler) -> None:
        self.sampler, self.seed, self.epoch = sampler, SAMPLE_SEED, 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str):  # the wrapped sampler's attributes (e.g. `minibatches_per_epoch`)
        if name == "sampler":  # (not set yet, while unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        seed, epoch = self.seed, self.epoch
        # Runs inside EpochLoader's RNG swap: the wrapped sampler shuffles from (seed, epoch), however many
        # draws the DataLoader made before (a new iterator and a persistent workers' reset make different ones)
        torch.random.default_generator.manual_seed(stream_seed(seed, epoch))
        for position, item in enumerate(self.sampler):
            yield stream_seed(seed, epoch, position), item

    @staticmethod
    def within(sampler) -> "_Positioned | None":
        """The `_Positioned` sampler of a loader: its own, or inside Lightning's DistributedSamplerWrapper."""
        for candidate in (sampler, getattr(getattr(sampler, "dataset", None), "_sampler", None)):
            if isinstance(candidate, _Positioned):
                return candidate
        return None


class _Reseeded(Dataset):
    """Seeds torch's RNG from its tag before each item, so random augmentation (HW3's transforms, HW4's
    crops) depends on where the item falls in the epoch: not on which worker loads it, on how many workers
    there are, or on what the process did before (a resumed run draws the same)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged):
        seed, item = tagged
        torch.random.default_generator.manual_seed(seed)
        return self.dataset[item]


class EpochLoader(DataLoader):
    """The training DataLoader of every homework: what epoch `e` serves is a function of (seed, e) alone,
    and a run resumed from a mid-epoch checkpoint serves the rest of that epoch exactly.

    - order: the sampler's draws (shuffling) come from torch's RNG seeded (seed, epoch), swapped in around
      each fetch, so they neither depend on nor disturb the model's RNG (dropout);
    - augmentation: each item is drawn with torch's RNG seeded (seed, epoch, position), in any worker;
    - resuming: `state_dict()` (epoch, batches served) goes into each checkpoint and comes back through
      `load_state_dict` when a run resumes mid-epoch (callbacks.ReproducibleEpochs sees to both); the
      batches already trained on are then fetched again and dropped (not skipped by index: that is what
      keeps every later batch, and which worker loads it, identical).
    The seed is the run's (`--seed_everything`; the sample's when unset); `set_epoch` is called at each
    epoch's start (callbacks.ReproducibleEpochs). Why not torchdata's StatefulDataLoader: it restores the
    sampler's and workers' RNG states as saved, so a run is reproducible from where it was saved, not as a
    function of (seed, epoch), and augmentation still depends on the number of workers.
    """

    def __init__(self, dataset, *args, sampler=None, shuffle: bool | None = None, **kwargs) -> None:
        if not isinstance(dataset, _Reseeded):  # Lightning rebuilds loaders (e.g. under DDP) from their attributes
            dataset = _Reseeded(dataset)
        if sampler is None:
            sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        if _Positioned.within(sampler) is None:
            sampler = _Positioned(sampler)
        super().__init__(dataset, *args, sampler=sampler, **kwargs)
        self.epoch, self.served, self._resume_at = 0, 0, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "served": self.served}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._resume_at = state["epoch"], (state["epoch"], state["served"])

    def __iter__(self):
        return self._serve()  # a generator: nothing is drawn before the first batch is asked for

    def _serve(self):
        epoch, seed = self.epoch, int(os.environ.get("PL_GLOBAL_SEED", SAMPLE_SEED))  # set by seed_everything
        positioned = _Positioned.within(self.sampler)
        positioned.seed = seed
        positioned.set_epoch(epoch)
        skip = self._resume_at[1] if self._resume_at and self._resume_at[0] == epoch else 0
        self._resume_at, self.served = None, 0
        own = torch.Generator().manual_seed(stream_seed(seed, epoch)).get_state()
        batches = None
        while True:
            theirs = torch.get_rng_state()
            torch.set_rng_state(own)
            try:
                if batches is None:
                    batches = super().__iter__()
                batch = next(batches)
            except StopIteration:
                return
            finally:
                own = torch.get_rng_state()
                torch.set_rng_state(theirs)
            self.served += 1
            if self.served > skip:
                yield batch


class TensorBatchDataset(Dataset):
    """In-memory tensors indexed by a whole batch of indices at once.

    A per-sample `TensorDataset` costs one Python call and one collate per sample; for tabular
    homeworks that overhead dwarfs the model. Here a batch is one fancy-indexing op per tensor,
    and a list of index tensors (see `MinibatchSampler`) gives a list of batches.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        assert tensors and all(len(t) == len(tensors[0]) for t in tensors), "tensors must share their first dim"
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, ...] | list:
        if isinstance(index, list):  # several minibatches: one gather per tensor, then free views
            sizes = [len(i) for i in index]
            return list(zip(*(t[torch.cat(index)].split(sizes) for t in self.tensors)))
        return tuple(t[index] for t in self.tensors)


#: How many minibatches one Lightning training step gets: a number, or "epoch" for all of them.
MinibatchesPerStep = int | Literal["epoch"]


class MinibatchSampler(Sampler):
    """Index tensors of whole minibatches: one `randperm` per epoch, no per-index Python loop.

    With `per_step` 1 each item is one minibatch. With more (or "epoch") each item is a list of
    minibatches, which a `models.base.MinibatchLoopTask` trains on in one Lightning step: for a
    model as small as HW1's, Lightning's bookkeeping per step (~0.4 ms) costs more than the step.
    Under DDP (several processes) each item is a list of one minibatch: Lightning deals items out to
    the processes, which must make the same number of optimizer steps, and DDP syncs gradients once
    per forward through its wrapper (once per Lightning step).
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, per_step: MinibatchesPerStep = 1) -> None:
        if per_step != "epoch" and (not isinstance(per_step, int) or per_step < 1):
            raise DataError(f"--data.minibatches_per_step must be a positive number or 'epoch' (got {per_step!r})")
        if batch_size < 1:
            raise DataError(f"--data.batch_size must be positive (got {batch_size})")
        self.num_samples, self.batch_size, self.shuffle = num_samples, batch_size, shuffle
        self.minibatches_per_epoch = math.ceil(num_samples / batch_size)
        self.per_step = self.minibatches_per_epoch if per_step == "epoch" else per_step
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            self.per_step = 1
        self.grouped = per_step != 1  # items are lists (even of one minibatch) for a minibatch-looping model

    def __len__(self) -> int:
        return math.ceil(self.minibatches_per_epoch / self.per_step)

    def __iter__(self):
        order = torch.randperm(self.num_samples) if self.shuffle else torch.arange(self.num_samples)
        batches = order.split(self.batch_size)
        if not self.grouped:
            yield from batches
            return
        for start in range(0, len(batches), self.per_step):
            yield list(batches[start:start + self.per_step])


def batch_loader(*tensors: torch.Tensor, batch_size: int, shuffle: bool,
                 minibatches_per_step: MinibatchesPerStep = 1) -> DataLoader:
    """A DataLoader over in-memory tensors that yields whole batches (or lists of them) without per-sample work."""
    sampler = MinibatchSampler(len(tensors[0]), batch_size, shuffle, minibatches_per_step)
    loader = EpochLoader if shuffle else DataLoader  # (training loaders shuffle)
    return loader(TensorBatchDataset(*tensors), sampler=sampler, batch_size=None)
