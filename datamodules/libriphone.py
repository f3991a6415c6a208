"""HW2: frame-wise phoneme classification (ML2022/ML2023 `libriphone`, ML2021 `timit_11`).

Each frame is classified from a window of `concat_nframes` frames centred on it. The sample code
builds every window up front (`torch.empty(3_000_000, 39 * concat_nframes)`: 5 GB at 11 frames,
24 GB at 51). Here each utterance's frames are stored once, packed into one float16 array with
offsets (`datamodules.packed`), and a batch of frame indices becomes its windows by one gather,
clamped to each utterance's bounds, on the device the batch is on.
"""

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.errors import DataError
from datamodules.base import HomeworkDataModule, batch_loader
from datamodules.packed import PackedTensors, frame_windows, pack_tensors, require_frames
from datamodules.lab_hooks import ReferenceData, Remedy, sample_rows

log = logging.getLogger(__name__)

FEATURE_DIM = 39  # MFCC (13) + delta + delta-delta, per frame
TIMIT_FRAMES = 11  # ML2021's rows hold 11 concatenated frames
TIMIT_GROUP = 100  # consecutive timit_11 rows kept together when the advisor's reference picks its regularization
DEMO_NFRAMES = 11  # the demo set's default `concat_nframes` (it trains on a CPU in about a minute)


@dataclass(frozen=True)
class PhoneLayout:
    """One year's files, classes and the sample code's validation split."""

    name: str
    kaggle_competition: str
    num_classes: int
    val_ratio: float  # the sample's 1 - train_ratio
    seed: int  # the sample's split seed (random.shuffle of the utterance ids)
    default_nframes: int  # `concat_nframes` when none is given


ML2021 = PhoneLayout("ml2021", "ml2021spring-hw2", 39, 0.2, 0, TIMIT_FRAMES)
ML2022 = PhoneLayout("ml2022", "ml2022spring-hw2", 41, 0.2, 1337, 21)
ML2023 = PhoneLayout("ml2023", "ml2023spring-hw2", 41, 0.25, 1213, 21)
LAYOUTS = (ML2021, ML2022, ML2023)
#: ML2022 and ML2023 ship the same file layout; ML2023's training split has this many utterances.
ML2023_TRAIN_UTTERANCES = 3429

LIBRIPHONE_FILES = ("train_split.txt", "test_split.txt", "train_labels.txt", "feat/train", "feat/test")
TIMIT_FILES = ("train_11.npy", "train_label_11.npy", "test_11.npy")


@dataclass(frozen=True)
class PhoneFiles:
    layout: PhoneLayout
    root: Path


def read_ids(path: Path) -> list[str]:
    """Utterance ids, one per line (blank lines ignored)."""
    ids = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: no utterance ids in this file")
    return ids


def read_labels(path: Path, num_classes: int) -> dict[str, np.ndarray]:
    """`train_labels.txt`: `<id> <label> <label> ...`, one line per utterance and one label per frame."""
    labels = {}
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                values = np.array(parts[1:], dtype=np.int64)
            except ValueError:
                bad = next(p for p in parts[1:] if not p.lstrip("-").isdigit())
                raise DataError(f"{path}: line {number} ({parts[0]}): label {bad!r} is not an integer") from None
            if len(values) and (values.min() < 0 or values.max() >= num_classes):
                bad = values[(values < 0) | (values >= num_classes)][0]
                raise DataError(f"{path}: line {number} ({parts[0]}): label {bad} is outside 0..{num_classes - 1}")
            labels[parts[0]] = values
    return labels


def sample_split(num_utterances: int, val_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation utterance indices as the sample code draws them: `random.seed(seed)`,
    `random.shuffle` of the ids, the first `int(n * (1 - val_ratio))` for training."""
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"--data.val_ratio must be between 0 and 1 (got {val_ratio})")
    order = list(range(num_utterances))
    random.Random(seed).shuffle(order)
    cut = int(num_utterances * (1 - val_ratio))
    if cut == 0 or cut == num_utterances:
        raise DataError(f"--data.val_ratio {val_ratio} leaves no utterance for training or validation "
                        f"({num_utterances} utterances)")
    return np.sort(order[:cut]), np.sort(order[cut:])


def utterance_rows(offsets: torch.Tensor, utterances: np.ndarray) -> torch.Tensor:
    """Row indices of all frames of `utterances` (in order) in a packed array, without a Python loop per frame."""
    index = torch.as_tensor(utterances, dtype=torch.long)
    starts, lengths = offsets[index], offsets[index + 1] - offsets[index]
    first = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
    return first + torch.arange(int(lengths.sum()))


class FrameSource:
    """Where a split's frames live and how a batch of frame indices becomes its windows.

    libriphone: a packed (frames, 39) array plus each frame's utterance bounds; windows are gathered.
    timit_11: (frames, 11 x 39) rows that already are windows; the middle `concat_nframes` are kept.
    The arrays are moved to a batch's device once and kept there (~200 MB for ML2022's training set).
    """

    def __init__(self, data: torch.Tensor, concat_nframes: int, offsets: torch.Tensor | None = None) -> None:
        self.data, self.concat_nframes, self.offsets, self.utterance = data, concat_nframes, offsets, None
        if offsets is not None:  # each row's utterance, whose offsets give the row's [start, end) bounds
            lengths = offsets.diff()
            self.utterance = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32), lengths)
        self._on: dict[torch.device, tuple] = {}

    def _arrays(self, device: torch.device) -> tuple:
        """(data, offsets, utterance) on `device`, moved there once (the data as float16: half the memory)."""
        if device not in self._on:
            arrays = (self.data, self.offsets, self.utterance)
            if device.type != "cpu":
                arrays = (self.data.to(device, torch.float16),
                          *(None if t is None else t.to(device) for t in arrays[1:]))
            self._on[device] = arrays
        return self._on[device]

    def windows(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, concat_nframes, 39) float32 windows centred on `rows`, on `rows`' device."""
        data, offsets, utterance = self._arrays(rows.device)
        if utterance is None:  # timit_11: slice the middle frames of each stored 11-frame window
            half, mid = self.concat_nframes // 2, TIMIT_FRAMES // 2
            stored = data[rows].view(len(rows), TIMIT_FRAMES, FEATURE_DIM)
            return stored[:, mid - half:mid + half + 1].float()
        u = utterance[rows].long()
        return frame_windows(data, rows, offsets[u], offsets[u + 1], self.concat_nframes).float()

    def groups(self, rows: torch.Tensor) -> torch.Tensor:
        """Which rows overlap in their windows: each row's utterance (timit_11 stores no utterance bounds: runs
        of TIMIT_GROUP consecutive rows, which hold each row's neighbours but a few at the ends)."""
        return self.utterance[rows].long() if self.utterance is not None else rows // TIMIT_GROUP


class LibriPhoneDataModule(HomeworkDataModule[PhoneFiles]):
    """HW2 phoneme frames from any year's layout, each frame classified from a window of its neighbours.

    The ~5k small `.pt` feature files are packed once into a memory-mapped float16 cache next to the
    data (re-packed when the files change); a batch is a set of frame indices whose windows are gathered
    on the training device, so memory does not grow with `concat_nframes`. Validation utterances are
    drawn as the sample code draws them (never single frames: neighbouring frames would leak).

    Args:
        data_dir: Folder holding `libriphone/` (ML2022/ML2023) or `timit_11/` (ML2021), or that folder
            itself. None: `data/hw2`, or a generated demo set when that holds no data.
        concat_nframes: Frames per window, odd, centred on the frame to classify (the sample's
            `concat_nframes`). None: 21 for libriphone, all 11 of ML2021's stored windows, 11 on the demo set.
        batch_size: Frames per batch.
        val_ratio: Share of training utterances held out for validation. None: the sample's (ML2022
            0.2, ML2023 0.25, ML2021 0.2; ML2021 holds out the last rows, as its sample does).
        seed: Seed of the utterance shuffle before the split. None: the sample's (ML2022 1337, ML2023 1213).
        cache_dir: Where the packed features go. None: a `.cache` folder beside the data.
    """

    homework = "hw2"
    kaggle_competition = ML2022.kaggle_competition
    expected_files = ("libriphone/ with train_split.txt, test_split.txt, train_labels.txt and feat/{train,test}/*.pt "
                      "(ML2022/ML2023), or timit_11/ with train_11.npy, train_label_11.npy, test_11.npy (ML2021)")
    runtime_args = HomeworkDataModule.runtime_args + ("cache_dir",)
    memory_args = ("batch_size", "concat_nframes")
    feature_dim = FEATURE_DIM
    remedies = (Remedy("bias", "more context", "--data.concat_nframes", plus=10, odd=True),)

    def __init__(
        self,
        data_dir: str | None = None,
        concat_nframes: int | None = None,
        batch_size: int = 512,
        val_ratio: float | None = None,
        seed: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if concat_nframes is not None and (concat_nframes < 1 or concat_nframes % 2 == 0):  # before any demo is written
            raise DataError(f"--data.concat_nframes must be a positive odd number, so that the window is "
                            f"centred on its frame (got {concat_nframes})")
        self.data_dir, self.files, self.is_demo = self.resolve_data_dir(data_dir)
        self.layout = self.files.layout
        self.kaggle_competition = self.layout.kaggle_competition
        self.num_classes = self.layout.num_classes
        if concat_nframes is None:  # the demo's phonemes last 3-10 frames: 11 frames see one and its neighbours
            concat_nframes = DEMO_NFRAMES if self.is_demo else self.layout.default_nframes
        self.concat_nframes = concat_nframes
        if self.layout is ML2021 and self.concat_nframes > TIMIT_FRAMES:
            raise DataError(f"--data.concat_nframes {self.concat_nframes}: ML2021's timit_11 files hold windows of "
                            f"{TIMIT_FRAMES} frames, so at most {TIMIT_FRAMES} can be used")
        self.save_hyperparameters({"concat_nframes": self.concat_nframes})  # resolved: linked to the model
        if batch_size < 1:
            raise DataError(f"--data.batch_size must be positive (got {batch_size})")
        self.batch_size = batch_size
        self.val_ratio = self.layout.val_ratio if val_ratio is None else val_ratio
        self.seed = self.layout.seed if seed is None else seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else self.files.root / ".cache"
        self.train_source: FrameSource | None = None
        self.test_source: FrameSource | None = None
        self.train_rows = self.train_y = self.val_rows = self.val_y = None

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> PhoneFiles | None:
        for names, kind in ((LIBRIPHONE_FILES, "libriphone (ML2022/ML2023)"), (TIMIT_FILES, "timit_11 (ML2021)")):
            present = [n for n in names if (directory / n).exists()]
            if not present:
                continue
            missing = [n for n in names if n not in present]
            if missing:
                raise DataError(f"{directory}: looks like the {kind} layout ({', '.join(present)}) but "
                                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
            if names is TIMIT_FILES:
                return PhoneFiles(ML2021, directory)
            count = len(read_ids(directory / "train_split.txt"))
            return PhoneFiles(ML2023 if count == ML2023_TRAIN_UTTERANCES else ML2022, directory)
        return None

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        write_demo_libriphone(directory / "libriphone")

    # --- reading -----------------------------------------------------------------------------
    def _pack(self, split: str) -> tuple[list[str], PackedTensors]:
        """The utterance ids of `train_split.txt` / `test_split.txt` and their packed features."""
        root = self.files.root
        ids = read_ids(root / f"{split}_split.txt")
        folder = root / "feat" / split
        on_disk = {p.stem for p in folder.glob("*.pt")}
        missing = [i for i in ids if i not in on_disk]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{folder / (missing[0] + '.pt')}: not found, but {split}_split.txt lists "
                            f"utterance {missing[0]}{more}")
        files = [folder / f"{i}.pt" for i in ids]
        return ids, pack_tensors(files, self.cache_dir, split, root, require_frames(FEATURE_DIM))

    def _load_timit(self, name: str) -> torch.Tensor:
        """One of ML2021's .npy files, memory-mapped (copy-on-write: torch may index it, the file stays as is)."""
        path = self.files.root / name
        try:
            array = np.load(path, mmap_mode="c")
        except Exception as err:
            raise DataError(f"{path}: cannot be read as a .npy array ({type(err).__name__})") from None
        width = TIMIT_FRAMES * FEATURE_DIM
        if array.ndim != 2 or array.shape[1] != width or array.dtype.kind != "f":
            raise DataError(f"{path}: {array.dtype} array of shape {array.shape}, expected float (frames, {width})")
        for start in range(0, len(array), 1 << 16):  # in chunks: a whole-array check would copy it
            finite = np.isfinite(array[start:start + (1 << 16)])
            if not finite.all():
                row = start + int(np.argwhere(~finite)[0][0])
                raise DataError(f"{path}: NaN or infinite value in row {row}")
        return torch.from_numpy(array)

    def _setup_libriphone_train(self) -> None:
        ids, packed = self._pack("train")
        labels_path = self.files.root / "train_labels.txt"
        labels = read_labels(labels_path, self.num_classes)
        lengths = packed.lengths.tolist()
        for utterance, length in zip(ids, lengths):
            if utterance not in labels:
                raise DataError(f"{labels_path}: no line for utterance {utterance} (listed in train_split.txt)")
            if len(labels[utterance]) != length:
                raise DataError(f"{labels_path}: utterance {utterance} has {len(labels[utterance])} labels but "
                                f"its features have {length} frames")
        y = torch.from_numpy(np.concatenate([labels[i] for i in ids]))
        train, val = sample_split(len(ids), self.val_ratio, self.seed)
        self.train_rows, self.val_rows = utterance_rows(packed.offsets, train), utterance_rows(packed.offsets, val)
        self.train_y, self.val_y = y[self.train_rows], y[self.val_rows]
        self.train_ids, self.val_ids = [ids[i] for i in train], [ids[i] for i in val]
        self.train_source = FrameSource(packed.data, self.concat_nframes, packed.offsets)

    def _setup_timit_train(self) -> None:
        x = self._load_timit("train_11.npy")
        path = self.files.root / "train_label_11.npy"
        try:
            raw = np.load(path)
            y = torch.from_numpy(raw.astype(np.int64))
        except (ValueError, TypeError) as err:
            raise DataError(f"{path}: labels must be class numbers 0..{self.num_classes - 1} ({err})") from None
        if len(y) != len(x):
            raise DataError(f"{path}: {len(y)} labels for the {len(x)} rows of train_11.npy")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            bad = int(y[(y < 0) | (y >= self.num_classes)][0])
            raise DataError(f"{path}: label {bad} is outside 0..{self.num_classes - 1}")
        cut = int(len(x) * (1 - self.val_ratio))  # the ML2021 sample: the last rows (whole utterances but one)
        self.train_rows, self.val_rows = torch.arange(cut), torch.arange(cut, len(x))
        self.train_y, self.val_y = y[:cut], y[cut:]
        self.train_source = FrameSource(x, self.concat_nframes)

    def _setup_test(self) -> None:
        if self.layout is ML2021:
            self.test_source = FrameSource(self._load_timit("test_11.npy"), self.concat_nframes)
            self.num_test_frames = len(self.test_source.data)
        else:
            self.test_ids, packed = self._pack("test")
            self.test_source = FrameSource(packed.data, self.concat_nframes, packed.offsets)
            self.num_test_frames = packed.num_rows

    # --- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_source is None:
            (self._setup_timit_train if self.layout is ML2021 else self._setup_libriphone_train)()
        if stage == "predict" and self.test_source is None:
            self._setup_test()

    def check_test_data(self) -> None:
        if self.test_source is None:
            self._setup_test()  # packs (and checks) the test features; predict then reuses them

    def train_dataloader(self) -> DataLoader:
        return batch_loader(self.train_rows, self.train_y, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.val_rows, self.val_y, batch_size=self.batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return batch_loader(torch.arange(self.num_test_frames), batch_size=self.batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.gather(batch)

    def gather(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """(frame indices, labels) -> (windows, labels) from the training frames; (indices,) -> (windows,)
        from the test frames. Runs after the batch reached its device, so a GPU gathers there."""
        if len(batch) == 2:
            rows, labels = batch
            return self.train_source.windows(rows), labels
        (rows,) = batch
        return (self.test_source.windows(rows),)

    def reference_data(self, max_samples: int) -> ReferenceData:
        """Sampled frames' windows, flattened (what the sample's MLP gets), grouped by utterance."""
        self.setup("fit")
        train, val = sample_rows(len(self.train_rows), max_samples, 0), sample_rows(len(self.val_rows), max_samples, 1)
        rows = self.train_rows[train]
        return ReferenceData("classification", f"frame windows of {self.concat_nframes} x {FEATURE_DIM} features",
                             self.train_source.windows(rows).flatten(1), self.train_y[train],
                             self.train_source.windows(self.val_rows[val]).flatten(1), self.val_y[val],
                             len(self.train_rows), len(self.val_rows), groups=self.train_source.groups(rows))

    # --- Kaggle export ----------------------------------------------------------------------
    submission_filename = "prediction.csv"
    submission_columns = ["Id", "Class"]

    @property
    def num_test_samples(self) -> int:
        return self.num_test_frames

    def to_submission(self, predictions: torch.Tensor):
        """`Id,Class`: Ids 0..N-1 over all test frames, utterances in `test_split.txt` order, frames in time order."""
        import pandas as pd

        return pd.DataFrame({"Id": np.arange(len(predictions)), "Class": predictions.argmax(-1).numpy()})


def write_demo_libriphone(root: Path, num_train: int = 240, num_test: int = 60, seed: int = 0) -> None:
    """A small libriphone-shaped set in the exact ML2022 layout: ids, labels and (T, 39) `.pt` features.

    Each utterance is a chain of phoneme segments (3-10 frames, silence at both ends, each phoneme
    followed by one of a few likely successors). A frame is its phoneme's mean vector plus strong
    noise, so one frame alone is a weak clue and a window of frames a strong one: the demo shows
    why `concat_nframes` matters. Features are normalised per utterance, like the real CMVN ones.
    """
    rng = np.random.default_rng(seed)
    classes = ML2022.num_classes
    means = rng.normal(0, 1, (classes, FEATURE_DIM))
    successors = np.stack([rng.choice(np.arange(1, classes), 4, replace=False) for _ in range(classes)])
    (root / "feat" / "train").mkdir(parents=True, exist_ok=True)
    (root / "feat" / "test").mkdir(parents=True, exist_ok=True)
    label_lines = []
    for split, count in (("train", num_train), ("test", num_test)):
        ids = []
        for k in range(count):
            speaker = int(rng.integers(19, 8000))
            ids.append(f"{speaker}-{int(rng.integers(100, 300000))}-{k:04d}")
            phones, phone = [0], 0
            while len(phones) < int(rng.integers(10, 20)):
                phone = int(rng.choice(successors[phone]) if rng.random() < 0.8 else rng.integers(1, classes))
                phones.append(phone)
            phones.append(0)
            labels = np.concatenate([np.full(int(rng.integers(3, 11)), p) for p in phones])
            frames = means[labels] + rng.normal(0, 0.6, FEATURE_DIM) + rng.normal(0, 3.0, (len(labels), FEATURE_DIM))
            frames = (frames - frames.mean(0)) / frames.std(0)
            torch.save(torch.from_numpy(frames.astype(np.float32)), root / "feat" / split / f"{ids[-1]}.pt")
            if split == "train":
                label_lines.append(" ".join([ids[-1], *map(str, labels)]))
        (root / f"{split}_split.txt").write_text("\n".join(ids) + "\n")
    (root / "train_labels.txt").write_text("\n".join(label_lines) + "\n")
