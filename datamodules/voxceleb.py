"""HW4: speaker identification from log-mel spectrograms (VoxCeleb subsets; ML2021, ML2022, ML2023).

The course ships ~56k small `uttr-*.pt` tensors. They are packed once into one memory-mapped float16
array with offsets (`datamodules.packed`, shared with HW2), so later runs start in seconds. A training
batch is a random crop of `segment_len` frames per utterance (the whole utterance when shorter), padded
with -20 as the sample code pads, gathered from the packed array with one index tensor. Validation and
prediction use whole utterances, sorted by length and batched with padding masks, so a batch predicts
exactly what one utterance at a time (the sample's batch size 1) would.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, random_split

from datamodules.errors import DataError
from datamodules.base import (EpochLoader, HomeworkDataModule, MinibatchSampler, check_folds,
                              length_batches, split_indices)
from datamodules.packed import PackedTensors, pack_tensors, require_frames
from datamodules.lab_hooks import ReferenceData, Remedy, sample_rows

log = logging.getLogger(__name__)

#: The sample code pads with -20: the log of a tiny energy, i.e. silence in a log-mel spectrogram.
PAD_VALUE = -20.0
SAMPLE_SPLIT_SEED = 87  # the HW4 sample's seed
JSON_FILES = ("mapping.json", "metadata.json", "testdata.json")


@dataclass
class SpeakerFiles:
    """The three JSON files of one `Dataset/` folder, parsed and checked (features are read later)."""

    root: Path
    speakers: list[str]  # speaker names in class order (`id2speaker`)
    n_mels: int = 40
    train: list[tuple[str, int, int]] = field(default_factory=list)  # (feature_path, mel_len, class)
    test: list[tuple[str, int]] = field(default_factory=list)  # (feature_path, mel_len), testdata.json order


def read_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A JSON object holding `keys`, or a one-line DataError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))  # (a BOM, as Windows editors save, is no error)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise DataError(f"{path}: no {', '.join(repr(k) for k in missing)} key (expected {', '.join(keys)})")
    return value


def read_mapping(path: Path) -> list[str]:
    """`mapping.json` -> the speaker names in class order; ids must be 0..n-1 both ways round."""
    mapping = read_json(path, ("speaker2id", "id2speaker"))
    speaker2id, id2speaker = mapping["speaker2id"], mapping["id2speaker"]
    if not isinstance(speaker2id, dict) or not isinstance(id2speaker, dict) or not speaker2id:
        raise DataError(f"{path}: 'speaker2id' and 'id2speaker' must be non-empty objects")
    n = len(speaker2id)
    try:
        names = [id2speaker[str(k)] for k in range(n)]
    except KeyError as err:
        raise DataError(f"{path}: 'id2speaker' has no id {err} (expected ids 0..{n - 1})") from None
    for k, name in enumerate(names):
        if speaker2id.get(name) != k:
            raise DataError(f"{path}: id2speaker[\"{k}\"] is {name!r} but speaker2id gives it "
                            f"{speaker2id.get(name)!r}")
    return names


def read_utterances(path: Path, entries, root: Path) -> list[tuple[str, int]]:
    """(feature_path, mel_len) of each `{"feature_path": ..., "mel_len": ...}` entry."""
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or "feature_path" not in entry or "mel_len" not in entry:
            raise DataError(f"{path}: utterance entry {entry!r} lacks 'feature_path' or 'mel_len'")
        length = entry["mel_len"]
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise DataError(f"{path}: {entry['feature_path']}: mel_len {length!r} is not a positive integer")
        out.append((str(entry["feature_path"]), length))
    return out


def read_n_mels(path: Path, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{path}: n_mels {value!r} is not a positive integer")
    return value


def read_dataset(root: Path) -> SpeakerFiles:
    """Parse and cross-check `mapping.json`, `metadata.json` and `testdata.json` in `root`."""
    speakers = read_mapping(root / "mapping.json")
    ids = {name: k for k, name in enumerate(speakers)}
    meta_path, test_path = root / "metadata.json", root / "testdata.json"
    metadata = read_json(meta_path, ("n_mels", "speakers"))
    n_mels = read_n_mels(meta_path, metadata["n_mels"])
    if not isinstance(metadata["speakers"], dict):
        raise DataError(f"{meta_path}: 'speakers' must be an object of speaker -> utterances")
    train = []
    for name, utterances in metadata["speakers"].items():
        if name not in ids:
            raise DataError(f"{meta_path}: speaker {name!r} is not in mapping.json")
        if not isinstance(utterances, list):
            raise DataError(f"{meta_path}: speaker {name!r}: expected a list of utterances")
        train += [(p, n, ids[name]) for p, n in read_utterances(meta_path, utterances, root)]
    if not train:
        raise DataError(f"{meta_path}: no training utterances")
    testdata = read_json(test_path, ("n_mels", "utterances"))
    if read_n_mels(test_path, testdata["n_mels"]) != n_mels:
        raise DataError(f"{test_path}: n_mels {testdata['n_mels']}, but metadata.json has {n_mels}")
    if not isinstance(testdata["utterances"], list) or not testdata["utterances"]:
        raise DataError(f"{test_path}: the 'utterances' list is empty: nothing to predict")
    test = read_utterances(test_path, testdata["utterances"], root)
    return SpeakerFiles(root, speakers, n_mels, train, test)


def sample_split(num_utterances: int, val_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample's split exactly: after `set_seed(87)` it calls `random_split(dataset, [int(0.9 * n), rest])`
    on torch's default generator before anything else draws from it, i.e. the first `int((1 - val_ratio) n)`
    of `randperm(n)` from a generator seeded `seed` train, the rest validate."""
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"--data.val_ratio must be between 0 and 1 (got {val_ratio})")
    num_train = int((1 - val_ratio) * num_utterances)
    if not 0 < num_train < num_utterances:
        raise DataError(f"--data.val_ratio {val_ratio} leaves no utterance for training or validation "
                        f"({num_utterances} utterances)")
    train, val = random_split(range(num_utterances), [num_train, num_utterances - num_train],
                              generator=torch.Generator().manual_seed(seed))
    return np.asarray(train.indices), np.asarray(val.indices)


def pad_crops(data: torch.Tensor, offsets: torch.Tensor, utterances: torch.Tensor, segment_len: int | None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, F) float32 frames of `utterances` from packed `data`, and the (B, T) padding mask (True = pad).

    `segment_len` None: whole utterances. Otherwise a random window of `segment_len` frames, or the whole
    utterance when it is shorter, as the sample's `random.randint(0, len - segment_len)` crop.
    T is the batch's longest piece; the rest is filled with -20 (`PAD_VALUE`). One gather for the batch.
    """
    starts = offsets[utterances]
    lengths = offsets[utterances + 1] - starts
    keep = lengths if segment_len is None else lengths.clamp(max=segment_len)
    if segment_len is not None:
        starts = starts + (torch.rand(len(lengths), generator=generator) * (lengths - keep + 1)).long()
    positions = torch.arange(int(keep.max()))
    padding = positions >= keep[:, None]
    index = (starts[:, None] + positions).masked_fill_(padding, 0)
    x = data[index].float().masked_fill_(padding[..., None], PAD_VALUE)
    return x, padding


class Utterances(Dataset):
    """Packed utterances indexed by a whole batch of utterance numbers at once (no per-sample collate).

    A batch is `(frames, padding_mask, labels)`, or `(frames, padding_mask)` without labels.
    `segment_len` None: whole utterances; otherwise random crops (drawn anew each time).
    """

    def __init__(self, packed: PackedTensors, labels: torch.Tensor | None, segment_len: int | None) -> None:
        self.packed, self.labels, self.segment_len = packed, labels, segment_len

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, utterances: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, padding = pad_crops(self.packed.data, self.packed.offsets, utterances, self.segment_len)
        return (x, padding) if self.labels is None else (x, padding, self.labels[utterances])


class VoxCelebDataModule(HomeworkDataModule[Path]):  # the layout is the Dataset/ folder itself
    """HW4 speakers from the course's `Dataset/` folder (mapping.json, metadata.json, testdata.json, uttr-*.pt).

    All years share this format, so the Kaggle competition cannot be told from the files: it defaults to
    ML2022's (`ml2022spring-hw4`); the submission file is the same for every year.

    Args:
        data_dir: The `Dataset/` folder, or the folder holding it. None: `data/hw4`, or a generated demo set.
        segment_len: Frames of the random training crop (the sample's 128); shorter utterances are kept whole.
        batch_size: Utterances per training batch; at most this many per validation/prediction batch.
        max_frames: Cap on a validation/prediction batch's padded frames (utterances x longest), so long
            utterances make smaller batches.
        val_ratio: Share of the training utterances held out for validation (the sample's 0.1).
        seed: Seed of the train/validation split (87 with `val_ratio` 0.1: exactly the sample's split).
        num_folds: Split into this many folds for cross-validation (None: the `val_ratio` split).
        fold: Which fold is validated on (0..num_folds-1), or `all` on the command line to train each.
        num_workers: DataLoader worker processes for training batches (0: the main process; batches are one
            gather each, so more rarely helps).
        cache_dir: Where the packed features go. None: a `.cache` folder beside the data.
    """

    homework = "hw4"
    kaggle_competition = "ml2022spring-hw4"
    expected_files = "Dataset/ with mapping.json, metadata.json, testdata.json and the uttr-*.pt features"
    runtime_args = HomeworkDataModule.runtime_args + ("cache_dir", "max_frames")
    memory_args = ("batch_size", "segment_len", "max_frames")
    remedies = (Remedy("bias", "longer crops", "--data.segment_len", times=2),)

    def __init__(
        self,
        data_dir: str | None = None,
        segment_len: int = 128,
        batch_size: int = 32,
        max_frames: int = 32 * 1024,
        val_ratio: float = 0.1,
        seed: int = SAMPLE_SPLIT_SEED,
        num_folds: int | None = None,
        fold: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("segment_len", segment_len), ("batch_size", batch_size), ("max_frames", max_frames)):
            if isinstance(value, bool) or value < 1:
                raise DataError(f"--data.{name} must be a positive number (got {value})")
        if num_workers < 0:
            raise DataError(f"--data.num_workers must be 0 or more (got {num_workers})")
        self.data_dir, self.root, self.is_demo = self.resolve_data_dir(data_dir)  # root: the folder of the JSONs
        self.files = read_dataset(self.root)
        self.speakers = self.files.speakers
        self.num_speakers, self.n_mels = len(self.speakers), self.files.n_mels  # linked to the model
        self.segment_len, self.batch_size, self.max_frames = segment_len, batch_size, max_frames
        self.val_ratio, self.seed, self.num_folds, self.fold = val_ratio, seed, num_folds, fold
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else self.root / ".cache"
        self.train_packed: PackedTensors | None = None
        self.test_packed: PackedTensors | None = None
        self.predict_order: torch.Tensor | None = None

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> Path | None:
        present = [n for n in JSON_FILES if (directory / n).is_file()]
        if not present:
            return None
        missing = [n for n in JSON_FILES if n not in present]
        if missing:
            raise DataError(f"{directory / missing[0]}: file not found ({directory} holds "
                            f"{', '.join(present)}; HW4's Dataset/ has {', '.join(JSON_FILES)})")
        return directory

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        write_demo_voxceleb(directory / "Dataset")

    # --- reading -----------------------------------------------------------------------------
    def _pack(self, name: str, entries: list[tuple]) -> PackedTensors:
        """The utterances' features packed (checked against `n_mels` and each `mel_len` as they are read)."""
        files = [self.root / entry[0] for entry in entries]
        lengths = {path: entry[1] for path, entry in zip(files, entries)}
        source = "metadata.json" if name == "train" else "testdata.json"
        try:
            packed = pack_tensors(files, self.cache_dir, name, self.root,
                                  require_frames(self.n_mels, lengths, source))
        except DataError:
            missing = [f for f in files if not f.exists()]  # a partly unpacked zip: say how much is missing
            if len(missing) > 1:
                raise DataError(f"{missing[0]}: file not found, and {len(missing) - 1} more of the {len(files)} "
                                f"feature files {source} lists") from None
            raise
        # the cache is keyed by the feature files; an edited JSON is checked here, all at once
        listed = torch.tensor([entry[1] for entry in entries])
        wrong = (packed.lengths != listed).nonzero()
        if len(wrong):
            k = int(wrong[0])
            raise DataError(f"{files[k]}: {int(packed.lengths[k])} frames, but {source} says {int(listed[k])}")
        if packed.shape[1] != self.n_mels:
            raise DataError(f"{files[0]}: {packed.shape[1]} mel bins, but {source} says n_mels {self.n_mels}")
        return packed

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_packed is None:
            self.train_packed = self._pack("train", self.files.train)
            self.labels = torch.tensor([entry[2] for entry in self.files.train])
            check_folds(self.num_folds, self.fold)
            if self.num_folds is None:
                train, val = sample_split(len(self.labels), self.val_ratio, self.seed)
            else:
                train, val = split_indices(len(self.labels), self.val_ratio, self.seed, self.num_folds, self.fold)
            self.train_index, self.val_index = torch.as_tensor(train), torch.as_tensor(val)
        if stage == "predict" and self.test_packed is None:
            self.check_test_data()

    def check_test_data(self) -> None:
        if self.test_packed is None:
            self.test_packed = self._pack("test", self.files.test)

    def reference_data(self, max_samples: int) -> ReferenceData:
        """Each utterance as the mean and standard deviation of its mel bins over time: a speaker's average
        spectrum and how much it moves, without the order of the frames."""
        self.setup("fit")

        def summaries(index: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            index = index[sample_rows(len(index), max_samples, seed)]
            frames = [self.train_packed[int(k)].float() for k in index]
            return torch.stack([torch.cat([f.mean(0), f.std(0, correction=0)]) for f in frames]), self.labels[index]

        return ReferenceData("classification", f"each utterance's mean and spread of its {self.n_mels} mel bins",
                             *summaries(self.train_index, 0), *summaries(self.val_index, 1),
                             len(self.train_index), len(self.val_index))

    def train_dataloader(self) -> DataLoader:
        sampler = MinibatchSampler(len(self.train_index), self.batch_size, shuffle=True)
        return EpochLoader(Utterances(self.train_packed, self.labels, self.segment_len),
                          sampler=_Subset(sampler, self.train_index), batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        lengths = self.train_packed.lengths[self.val_index]
        batches = [self.val_index[b] for b in self.sorted_batches(lengths)]
        return DataLoader(Utterances(self.train_packed, self.labels, None), sampler=batches, batch_size=None)

    def predict_dataloader(self) -> DataLoader:
        batches = self.sorted_batches(self.test_packed.lengths)
        self.predict_order = torch.cat(batches)
        return DataLoader(Utterances(self.test_packed, None, None), sampler=batches, batch_size=None)

    def sorted_batches(self, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Utterances sorted by length, at most `batch_size` and `max_frames` padded frames per batch."""
        return [torch.from_numpy(b) for b in length_batches(lengths.numpy(), self.max_frames, self.batch_size)]

    def state_dict(self) -> dict:
        """The speakers in class order, in checkpoints: class k means the same person when predicting."""
        return {"speakers": list(self.speakers)}

    def load_state_dict(self, state: dict) -> None:
        trained = state.get("speakers")
        if trained is not None and list(trained) != list(self.speakers):
            k = next((k for k, (a, b) in enumerate(zip(trained, self.speakers)) if a != b), len(self.speakers))
            here = repr(self.speakers[k]) if k < len(self.speakers) else "none"
            ckpt = getattr(self.trainer, "ckpt_path", None) or "the checkpoint"
            raise DataError(f"{self.root / 'mapping.json'}: other speakers than the model in {ckpt} was trained on "
                            f"(class {k} was {trained[k]!r}, here {here}), so its predictions would name the wrong "
                            f"people; use the mapping.json it was trained with")

    def collate_predictions(self, batches: list) -> torch.Tensor:
        """Class probabilities in `testdata.json` order (batches come sorted by length)."""
        sorted_probs = torch.cat([b.detach().cpu() for b in batches])
        probs = torch.empty_like(sorted_probs)
        probs[self.predict_order] = sorted_probs
        return probs

    # --- Kaggle export ----------------------------------------------------------------------
    submission_filename = "output.csv"
    submission_columns = ["Id", "Category"]

    @property
    def num_test_samples(self) -> int:
        return len(self.files.test)

    def to_submission(self, predictions: torch.Tensor):
        """`Id,Category`: each test `feature_path` (testdata.json order) and its speaker's name."""
        import pandas as pd

        names = np.asarray(self.speakers)
        return pd.DataFrame({"Id": [entry[0] for entry in self.files.test],
                             "Category": names[predictions.argmax(-1).numpy()]})


class _Subset:
    """A minibatch sampler over positions 0..n-1 mapped to the utterance numbers `index`."""

    def __init__(self, sampler: MinibatchSampler, index: torch.Tensor) -> None:
        self.sampler, self.index = sampler, index

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return (self.index[batch] for batch in self.sampler)


def write_demo_voxceleb(root: Path, num_speakers: int = 30, per_speaker: int = 16, num_test: int = 200,
                        n_mels: int = 40, seed: int = 0) -> None:
    """A small set in the exact `Dataset/` layout: mapping.json, metadata.json, testdata.json, uttr-*.pt.

    Each speaker has a spectral envelope (formant-like bumps) and a way of moving it (a vibrato of its own
    rate and depth). Speakers come in pairs that share an envelope and differ only in that motion, so
    the dynamics matter, not only the average spectrum. Each utterance adds shared "phoneme" content
    (random segments from a common pool), a random loudness offset (identity is not a constant level)
    and noise, with lengths of 40-300 frames, so some are shorter than `segment_len` and some longer.
    """
    rng = np.random.default_rng(seed)
    bins = np.arange(n_mels)[:, None]
    pairs = (num_speakers + 1) // 2
    centres = np.sort(rng.uniform(3, n_mels - 3, (pairs, 3)), axis=1)
    widths = rng.uniform(1.5, 4.0, (pairs, 3))
    rates = rng.uniform(0.05, 0.35, num_speakers)  # radians per frame of the envelope's wobble
    depths = rng.uniform(1.0, 3.0, num_speakers)  # bins it moves
    phonemes = rng.normal(0, 1.2, (24, n_mels))
    names = [f"id{10000 + 37 * k:05d}" for k in range(num_speakers)]

    def utterance(speaker: int) -> np.ndarray:
        length = int(rng.integers(40, 301))
        t = np.arange(length)
        wobble = depths[speaker] * np.sin(rates[speaker] * t + rng.uniform(0, 2 * np.pi))
        pair = speaker // 2
        envelope = sum(3.0 * np.exp(-0.5 * ((bins - c - wobble) / w) ** 2)
                       for c, w in zip(centres[pair], widths[pair]))  # (n_mels, T)
        segments = np.repeat(rng.integers(0, len(phonemes), length // 5 + 1), 5)[:length]
        frames = envelope.T + phonemes[segments] + rng.uniform(-4, 4) + rng.normal(0, 1.0, (length, n_mels))
        return frames.astype(np.float32) - 8.0  # log-mel-like levels, above the -20 padding

    root.mkdir(parents=True, exist_ok=True)
    counter = iter(rng.permutation(num_speakers * per_speaker + num_test))

    def save(frames: np.ndarray) -> dict:
        path = f"uttr-{next(counter):06x}{rng.integers(16**8):08x}.pt"
        torch.save(torch.from_numpy(frames), root / path)
        return {"feature_path": path, "mel_len": len(frames)}

    metadata = {"n_mels": n_mels, "speakers": {names[s]: [save(utterance(s)) for _ in range(per_speaker)]
                                               for s in range(num_speakers)}}
    testdata = {"n_mels": n_mels, "utterances": [save(utterance(int(s)))
                                                 for s in rng.integers(0, num_speakers, num_test)]}
    mapping = {"speaker2id": {n: k for k, n in enumerate(names)},
               "id2speaker": {str(k): n for k, n in enumerate(names)}}
    for name, value in (("mapping.json", mapping), ("metadata.json", metadata), ("testdata.json", testdata)):
        (root / name).write_text(json.dumps(value))
