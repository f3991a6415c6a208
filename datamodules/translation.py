"""HW5: English -> Chinese translation data in the course's layout (train_dev.raw.en/zh, test.raw.en/zh).

The course's cleaning (`clean_s`, `clean_corpus`), one SentencePiece model over both sides (trained once,
cached beside the data), and batches capped by token count rather than sentence count, as fairseq does:
sentences of similar length share a batch, so little of each batch is padding.
"""

import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.atomic import build_once
from datamodules.errors import DataError
from datamodules.base import (SAMPLE_SEED, EpochLoader, HomeworkDataModule, length_batches,
                              split_indices)

log = logging.getLogger(__name__)

SRC, TGT = "en", "zh"
TRAIN_PREFIX, TEST_PREFIX = "train_dev.raw", "test.raw"
#: What test.raw.zh holds on every line when the course keeps the references.
PLACEHOLDER = "。"
#: SentencePiece special ids (fairseq's order): these four are part of `vocab_size`.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: The course's vocabulary size: the default, when the corpus is large enough to fill it.
COURSE_VOCAB_SIZE = 8000


# --- reading and cleaning, as the course's sample code does -------------------------------------
def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (split on newlines only: TED text holds U+2028, which
    `str.splitlines` would also split on, shifting every later line against the other language), without
    the byte-order mark Windows editors put first (it would be a character of line 1)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # (not "utf-8-sig": its error offsets skip the mark)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x}); "
                        f"convert it, e.g. `iconv -f big5 -t utf-8`") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def strQ2B(ustring: str) -> str:  # noqa: N802 (the course's name)
    """Full-width characters to half-width (the course's `strQ2B`): "（Ｈｉ！）" -> "(Hi!)"."""
    out = []
    for char in ustring:
        code = ord(char)
        if code == 0x3000:
            code = 0x20
        elif 0xFF01 <= code <= 0xFF5E:
            code -= 0xFEE0
        out.append(chr(code))
    return "".join(out)


def clean_s(s: str, lang: str) -> str:
    """The course's per-sentence cleaning: asides in parentheses removed, punctuation spaced out."""
    s = strQ2B(s.strip())  # the course converts zh only; English rarely has full-width text, and it does no harm
    s = re.sub(r"\([^()]*\)", "", s)  # remove (asides)
    if lang == "en":
        s = s.replace("-", "")
        s = re.sub(r'([.,;!?()"])', r" \1 ", s)
    else:
        for old, new in ((" ", ""), ("—", ""), ("“", '"'), ("”", '"'), ("_", "")):
            s = s.replace(old, new)
        s = re.sub(r'([。,;!?()"~「」])', r" \1 ", s)
    return " ".join(s.split())


def len_s(s: str, lang: str) -> int:
    """Chinese is counted in characters, English in words (the course's `len_s`)."""
    return len(s) if lang == "zh" else len(s.split())


def detokenize_zh(s: str) -> str:
    """A cleaned zh sentence as text: cleaning removed every space, then spaced out the punctuation."""
    return "".join(s.split())


def clean_corpus(src: list[str], tgt: list[str], max_len: int = 1000, ratio: float = 9,
                 source: str = "the corpus") -> tuple[list[str], list[str], np.ndarray]:
    """Clean every pair and drop the empty ones, those over `max_len` (words / characters) and those whose
    length ratio exceeds `ratio` (<= 0 turns a filter off); returns the kept pairs and their line numbers.
    A corpus emptied by this is a DataError naming the filter that removed most of it."""
    src = [clean_s(s, SRC) for s in src]
    tgt = [clean_s(s, TGT) for s in tgt]
    len_src = np.array([len_s(s, SRC) for s in src])
    len_tgt = np.array([len_s(s, TGT) for s in tgt])
    empty = (len_src < 1) | (len_tgt < 1)
    long = ~empty & (max_len > 0) & ((len_src > max_len) | (len_tgt > max_len))
    with np.errstate(divide="ignore", invalid="ignore"):
        uneven = ~empty & ~long & (ratio > 0) & ((len_src / len_tgt > ratio) | (len_tgt / len_src > ratio))
    keep = np.flatnonzero(~(empty | long | uneven))
    if len(keep) == 0:
        counts = {"empty after cleaning": int(empty.sum()), f"longer than max_len={max_len}": int(long.sum()),
                  f"length ratio over ratio={ratio}": int(uneven.sum())}
        worst = max(counts, key=counts.get)
        raise DataError(f"{source}: no sentence pair is left after cleaning ({len(src)} pairs; "
                        + ", ".join(f"{n} {why}" for why, n in counts.items())
                        + f"); most were removed as {worst}")
    return [src[i] for i in keep], [tgt[i] for i in keep], keep


# --- subwords -------------------------------------------------------------------------------------
class SubwordTokenizer:
    """A SentencePiece model held as bytes (what the checkpoint carries), with encode/decode over batches."""

    def __init__(self, model: bytes) -> None:
        import sentencepiece as spm  # here, not at import time: `--help` stays fast

        self.model = model
        self.processor = spm.SentencePieceProcessor(model_proto=model)

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, lines: list[str]) -> list[list[int]]:
        return self.processor.encode(lines, out_type=int, num_threads=os.cpu_count() or 1)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.processor.decode(ids)

    @classmethod
    def train(cls, lines: list[str], vocab_size: int, model_type: str, at_most: bool = False) -> "SubwordTokenizer":
        """The course's settings: full character coverage (Chinese has thousands of characters) and
        NFKC normalization with case folding. `at_most`: fewer pieces when the corpus cannot make `vocab_size`
        (as many as SentencePiece says it can)."""
        import sentencepiece as spm

        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type=model_type,
                character_coverage=1.0, normalization_rule_name="nmt_nfkc_cf", input_sentence_size=1_000_000,
                shuffle_input_sentence=True, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                num_threads=os.cpu_count() or 1, minloglevel=2)
        except RuntimeError as err:  # e.g. "Vocabulary size too high (8000). Please set it to a value <= 171."
            reason = str(err).strip().splitlines()[-1]
            most = re.search(r"value <= (\d+)", reason)
            if at_most and most and 8 <= int(most.group(1)) < vocab_size:
                return cls.train(lines, int(most.group(1)), model_type)
            raise DataError(f"SentencePiece cannot build a {vocab_size}-piece vocabulary from this corpus "
                            f"({reason}); choose another --data.vocab_size") from None
        return cls(model.getvalue())


# --- batches capped by tokens ------------------------------------------------------------------------
class TokenBatchSampler(Sampler):
    """Length-bucketed batches of at most `max_tokens` padded tokens (fairseq's `--max-tokens`).

    Sentences are sorted by length (ties broken at random each epoch when shuffling) and cut into
    batches, and the batches' order is shuffled. The number of batches is the same every epoch, and
    the items are whole batches, so under DDP Lightning's DistributedSamplerWrapper deals batches
    out to the processes (each process builds the same batches: they depend on seed and epoch only).
    """

    def __init__(self, lengths: np.ndarray, max_tokens: int, shuffle: bool, seed: int = SAMPLE_SEED) -> None:
        if max_tokens < 1:
            raise DataError(f"--data.max_tokens must be positive (got {max_tokens})")
        self.lengths, self.max_tokens, self.shuffle, self.seed = np.asarray(lengths), max_tokens, shuffle, seed
        self.epoch = 0
        self.num_batches = len(length_batches(self.lengths, max_tokens))

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch: a new epoch, new ties and order (the same in every process)."""
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        ties = rng.random(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = length_batches(self.lengths, self.max_tokens, order=np.lexsort((ties, self.lengths)))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from (b.tolist() for b in batches)


class SentencePairs(Dataset):
    """Token ids of sentence pairs (targets None for text to translate), indexed by whole batches.

    A batch is a dict: `src` (B, S) = pieces + </s>; `tgt_in` (B, T) = <s> + pieces and `tgt_out`
    (B, T) = pieces + </s> (teacher forcing); padded with PAD_ID; `index`: each sentence's position
    in its split, so predictions can be put back in file order.
    """

    def __init__(self, src: list[list[int]], tgt: list[list[int]] | None = None) -> None:
        self.src, self.tgt = src, tgt

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> np.ndarray:
        """Each pair's padded size: the longer of its two token sequences."""
        src = np.array([len(s) + 1 for s in self.src])
        return src if self.tgt is None else np.maximum(src, np.array([len(t) + 1 for t in self.tgt]))

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = {"src": pad([self.src[i] + [EOS_ID] for i in indices]), "index": torch.tensor(indices)}
        if self.tgt is not None:
            batch["tgt_in"] = pad([[BOS_ID] + self.tgt[i] for i in indices])
            batch["tgt_out"] = pad([self.tgt[i] + [EOS_ID] for i in indices])
        return batch


def pad(sequences: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(sequences), max(map(len, sequences))), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass(frozen=True)
class TranslationFiles:
    """The course's files in one folder; the training pair may be absent (translating new text with a checkpoint)."""

    directory: Path
    train_src: Path | None
    train_tgt: Path | None
    test_src: Path | None
    test_tgt: Path | None


@dataclass
class Corpus:
    """Cleaned sentences of one split; `tgt` None where there is nothing to compare with."""

    src: list[str]
    tgt: list[str] | None


class TranslationDataModule(HomeworkDataModule[TranslationFiles]):
    """HW5 data: the course's cleaning, a cached SentencePiece vocabulary, batches capped by tokens.

    The checkpoint carries the SentencePiece model (`state_dict`), so `predict --ckpt_path best
    --data.data_dir DIR` translates a DIR that holds only `test.raw.en`. `test` scores BLEU when
    `test.raw.zh` holds real references, and refuses when it holds the course's `。` placeholders.

    Args:
        data_dir: Folder with train_dev.raw.en/zh and test.raw.en (None: data/hw5, else the demo set).
        vocab_size: SentencePiece vocabulary size, both languages together. None: the course's 8000, or as many
            pieces as a smaller corpus can make (said when so; the checkpoint records the size used).
        subword_model: SentencePiece model type.
        max_len: Drop training pairs longer than this (English words / Chinese characters).
        ratio: Drop training pairs whose length ratio exceeds this.
        max_tokens: Padded tokens per batch (sentences x longest), fairseq's --max-tokens.
        val_ratio: Fraction of the training pairs held out for validation.
        seed: Seed of the validation split and of batch shuffling.
        cache_dir: Where SentencePiece models are cached (None: `.cache` beside the data, or
            ~/.cache/ntu-ml-hw5 when that folder is read-only).
        num_workers: DataLoader worker processes (batches are cheap to build: 0 is usually best).
    """

    homework = "hw5"
    kaggle_competition = None  # graded by BLEU on prediction.txt, not on Kaggle
    expected_files = "train_dev.raw.en + train_dev.raw.zh + test.raw.en (+ test.raw.zh)"
    runtime_args = HomeworkDataModule.runtime_args + ("max_tokens", "cache_dir")
    split_args = ("val_ratio", "seed", "max_len", "ratio")  # the validation pairs depend on the cleaning too
    #: The demo's vocabulary: its ~40 words and ~20 characters cannot fill 8000 pieces.
    demo_subwords = (200, "bpe")

    def __init__(
        self,
        data_dir: str | None = None,
        vocab_size: int | None = None,
        subword_model: Literal["unigram", "bpe"] = "unigram",
        max_len: int = 1000,
        ratio: float = 9.0,
        max_tokens: int = 4096,
        val_ratio: float = 0.01,
        seed: int = SAMPLE_SEED,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir, self.files, self.is_demo = self.resolve_data_dir(data_dir)
        if self.is_demo and (vocab_size, subword_model) != self.demo_subwords:
            log.warning("The demo's few words make a %d-piece %s vocabulary (a unigram model splits its English "
                        "into letters): --data.vocab_size %s --data.subword_model %s are not used",
                        *self.demo_subwords, vocab_size or COURSE_VOCAB_SIZE, subword_model)
            vocab_size, subword_model = self.demo_subwords
            # what the checkpoint and the logged config say
            self.save_hyperparameters({**self.hparams, "vocab_size": vocab_size, "subword_model": subword_model})
        if vocab_size is not None and vocab_size < 8:
            raise DataError(f"--data.vocab_size must be at least 8 (got {vocab_size})")
        self.max_tokens, self.num_workers = max_tokens, num_workers
        self.tokenizer: SubwordTokenizer | None = None
        self.train: Corpus | None = None
        self.val: Corpus | None = None
        self.test: Corpus | None = None
        self._test_references: list[str] | None = None

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary size (linked to `model.vocab_size` by the CLI). Unset, it is the course's
        8000 or what a smaller corpus makes: known once the tokenizer is trained (or loaded from the cache)."""
        if self.hparams.vocab_size is None:
            self.ensure_tokenizer()
        return self.hparams.vocab_size

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> TranslationFiles | None:
        def file(name: str) -> Path | None:
            return directory / name if (directory / name).is_file() else None

        train_src, train_tgt = file(f"{TRAIN_PREFIX}.{SRC}"), file(f"{TRAIN_PREFIX}.{TGT}")
        test_src, test_tgt = file(f"{TEST_PREFIX}.{SRC}"), file(f"{TEST_PREFIX}.{TGT}")
        if not (train_src or train_tgt or test_src):
            return None
        if bool(train_src) != bool(train_tgt):
            present, absent = ((train_src, f"{TRAIN_PREFIX}.{TGT}") if train_src
                               else (train_tgt, f"{TRAIN_PREFIX}.{SRC}"))
            raise DataError(f"{directory}: found {present.name} but not {absent}; the two sides come together")
        return TranslationFiles(directory, train_src, train_tgt, test_src, test_tgt)

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        write_demo_translation(directory)

    @classmethod
    def download_hint(cls) -> str:
        return "Get the course's ted2020 files (the HW5 sample code downloads them)"

    # --- reading --------------------------------------------------------------------------------
    def read_pair(self, src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if len(src) != len(tgt):
            raise DataError(f"{src_path} has {len(src)} lines but {tgt_path.name} has {len(tgt)}: "
                            f"line i of one must translate line i of the other")
        if not src:
            raise DataError(f"{src_path}: the file is empty")
        return src, tgt

    def _read_training_files(self) -> None:
        if self.train is not None:
            return
        if self.files.train_src is None:
            raise DataError(f"{self.data_dir}: training needs {TRAIN_PREFIX}.{SRC} and {TRAIN_PREFIX}.{TGT} "
                            f"(only the test file is there)")
        src, tgt = self.read_pair(self.files.train_src, self.files.train_tgt)
        hp = self.hparams
        src, tgt, _ = clean_corpus(src, tgt, hp.max_len, hp.ratio, source=str(self.files.train_src))
        train_idx, val_idx = split_indices(len(src), hp.val_ratio, hp.seed)
        if len(val_idx) == 0:
            raise DataError(f"--data.val_ratio {hp.val_ratio} leaves no validation pair out of {len(src)}")
        self.train = Corpus([src[i] for i in train_idx], [tgt[i] for i in train_idx])
        self.val = Corpus([src[i] for i in val_idx], [tgt[i] for i in val_idx])
        rank_zero_info(f"{len(src)} training pairs after cleaning: {len(train_idx)} train, {len(val_idx)} validation")

    def _read_test_file(self) -> None:
        if self.test is not None:
            return
        if self.files.test_src is None:
            raise DataError(f"{self.data_dir}: {TEST_PREFIX}.{SRC} not found (the sentences to translate)")
        src = read_lines(self.files.test_src)
        if not src:
            raise DataError(f"{self.files.test_src}: the file is empty")
        self.test = Corpus([clean_s(s, SRC) for s in src], None)  # cleaned, never filtered: every line gets one

    @property
    def test_references(self) -> list[str] | None:
        """test.raw.zh's lines, cleaned as the training targets, when they are real references (not `。`)."""
        if self._test_references is None and self.files.test_tgt is not None and self.files.test_src is not None:
            src, tgt = self.read_pair(self.files.test_src, self.files.test_tgt)
            if any(line.strip() not in (PLACEHOLDER, "") for line in tgt):
                self._test_references = [detokenize_zh(clean_s(s, TGT)) for s in tgt]
        return self._test_references

    @property
    def val_references(self) -> list[str]:
        """The validation split's Chinese sentences as text, to score translations against."""
        return [detokenize_zh(s) for s in self.val.tgt]

    def check_test_labels(self) -> None:
        """`test` reports BLEU when test.raw.zh holds references; otherwise a DataError says why it cannot."""
        if self.test_references is not None:
            return
        if self.files.test_tgt is None:
            raise DataError(f"{self.data_dir} has no {TEST_PREFIX}.{TGT}, so `test` has no references to compute "
                            f"BLEU against; `validate` scores the validation split, `predict` writes prediction.txt")
        raise DataError(f"{self.files.test_tgt} holds only the course's '{PLACEHOLDER}' placeholder lines, not "
                        f"references, so `test` cannot compute BLEU; `validate` scores the validation split, "
                        f"`predict` writes prediction.txt")

    def check_test_data(self) -> None:
        self._read_test_file()
        if self.files.test_tgt is not None:
            self.test_references  # a line-count mismatch shows now, not after training

    # --- subwords -------------------------------------------------------------------------------
    def cache_folder(self) -> Path:
        if self.hparams.cache_dir is not None:
            return Path(self.hparams.cache_dir).expanduser()
        beside = self.data_dir / ".cache"
        folder = beside if beside.exists() else self.data_dir
        if os.access(folder, os.W_OK) and folder.stat().st_mode & 0o222:  # (root may write to a read-only folder)
            return beside
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ntu-ml-hw5"

    def fit_tokenizer(self) -> SubwordTokenizer:
        """Train SentencePiece on the cleaned training split, or load the model trained on the same text
        with the same settings before (the cache key hashes both)."""
        self._read_training_files()
        hp = self.hparams
        lines = self.train.src + self.train.tgt
        digest = hashlib.sha1(json.dumps([hp.vocab_size, hp.subword_model]).encode())
        for line in lines:
            digest.update(line.encode())
            digest.update(b"\n")
        size = "auto" if hp.vocab_size is None else hp.vocab_size
        path = self.cache_folder() / f"spm_{hp.subword_model}{size}_{digest.hexdigest()[:16]}.model"
        tokenizer = None

        def train() -> SubwordTokenizer:
            wanted = hp.vocab_size or COURSE_VOCAB_SIZE
            rank_zero_info(f"Training a {wanted}-piece {hp.subword_model} SentencePiece model on "
                           f"{len(self.train.src)} training pairs (once; cached in {path.parent})")
            trained = SubwordTokenizer.train(lines, wanted, hp.subword_model, at_most=hp.vocab_size is None)
            if len(trained) > wanted or (hp.vocab_size is not None and len(trained) != hp.vocab_size):
                raise DataError(f"SentencePiece made {len(trained)} pieces, not --data.vocab_size {hp.vocab_size}")
            return trained

        def train_into(tmp: Path) -> None:
            nonlocal tokenizer
            tokenizer = train()
            tmp.write_bytes(tokenizer.model)

        try:  # two runs started at once train it once: the second waits and loads the first's model
            build_once(path, train_into, ready=Path.is_file, what="training the SentencePiece model")
        except OSError as err:
            log.warning("Could not cache the SentencePiece model in %s (%s): it will be trained again next time",
                        path.parent, err)
            tokenizer = tokenizer or train()
        if tokenizer is None:
            rank_zero_info(f"Using the SentencePiece model {path}")
            tokenizer = SubwordTokenizer(path.read_bytes())
        if hp.vocab_size is None:  # the size used, in the checkpoint: `predict` rebuilds the same model
            if len(tokenizer) < COURSE_VOCAB_SIZE:
                say = log.warning if rank_zero_only.rank == 0 else log.debug  # (one line, not one per process)
                say("%s: this corpus makes at most %d SentencePiece pieces, fewer than the course's %d: using %d "
                    "(--data.vocab_size sets another size)", self.files.train_src.parent, len(tokenizer),
                    COURSE_VOCAB_SIZE, len(tokenizer))
            self.save_hyperparameters({**self.hparams, "vocab_size": len(tokenizer)})
        return tokenizer

    def ensure_tokenizer(self) -> SubwordTokenizer:
        if self.tokenizer is None:
            if self.files.train_src is None:
                raise DataError(f"{self.data_dir} has no training files to build the vocabulary from: translate "
                                f"with a checkpoint (--ckpt_path best|last|FILE), which carries it")
            self.tokenizer = self.fit_tokenizer()
        return self.tokenizer

    def detokenize(self, ids: list[list[int]]) -> list[str]:
        """Token ids (no specials) -> Chinese text as it goes in prediction.txt."""
        return [detokenize_zh(s) for s in self.ensure_tokenizer().decode(ids)]

    def state_dict(self) -> dict:
        """The SentencePiece model, in the checkpoint: the checkpoint alone can translate."""
        if self.tokenizer is None:
            return {}
        return {"sentencepiece_model": torch.frombuffer(bytearray(self.tokenizer.model), dtype=torch.uint8)}

    def load_state_dict(self, state: dict) -> None:
        if "sentencepiece_model" in state:
            self.tokenizer = SubwordTokenizer(state["sentencepiece_model"].numpy().tobytes())

    # --- Lightning hooks ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Read and clean text only: the tokenizer may still come from a checkpoint (restored after setup)."""
        if stage in ("fit", "validate"):
            self._read_training_files()
        else:
            self._read_test_file()

    def _encode(self, corpus: Corpus, drop_over_cap: bool = False) -> SentencePairs:
        tokenizer = self.ensure_tokenizer()
        pairs = SentencePairs(tokenizer.encode(corpus.src), tokenizer.encode(corpus.tgt) if corpus.tgt else None)
        if drop_over_cap:
            keep = np.flatnonzero(pairs.lengths() <= self.max_tokens)
            if len(keep) < len(pairs):
                log.warning("Skipping %d training pair(s) longer than --data.max_tokens %d tokens",
                            len(pairs) - len(keep), self.max_tokens)
                pairs = SentencePairs([pairs.src[i] for i in keep], [pairs.tgt[i] for i in keep])
        return pairs

    def _loader(self, pairs: SentencePairs, shuffle: bool) -> DataLoader:
        sampler = TokenBatchSampler(pairs.lengths(), self.max_tokens, shuffle, self.hparams.seed)
        loader = EpochLoader if shuffle else DataLoader  # (training loaders shuffle)
        return loader(pairs, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._encode(self.train, drop_over_cap=True), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._encode(self.val), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self._read_test_file()
        return self._loader(self._encode(self.test), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        self._read_test_file()
        return self._loader(self._encode(self.test), shuffle=False)

    # --- prediction.txt ---------------------------------------------------------------------------
    submission_filename = "prediction.txt"
    submission_columns = None  # a text file: one translation per line of test.raw.en

    @property
    def num_test_samples(self) -> int:
        self._read_test_file()
        return len(self.test.src)

    def collate_predictions(self, batches: list[dict]) -> list[list[int]]:
        """Translations back in test.raw.en's order (batches are sorted by length)."""
        out: list[list[int] | None] = [None] * self.num_test_samples
        for batch in batches:
            for index, tokens in zip(batch["index"].tolist(), batch["tokens"]):
                out[index] = tokens
        missing = [i for i, t in enumerate(out) if t is None]
        assert not missing, f"no translation for test sentence(s) {missing[:5]}"
        return out

    def to_submission(self, predictions: list[list[int]]) -> list[str]:
        return self.detokenize(predictions)


# --- demo data ----------------------------------------------------------------------------------
ONES = "zero one two three four five six seven eight nine".split()
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
DIGITS_ZH = "零一二三四五六七八九"
#: (English template, Chinese template): a number phrase in a sentence, as the demo's translations.
DEMO_TEMPLATES = (
    ("{}.", "{}。"),
    ("I have {} books.", "我有{}本书。"),
    ("He paid {} dollars.", "他付了{}美元。"),
)


def number_en(n: int) -> str:
    """English words for 1 <= n < 100000: 42312 -> "forty-two thousand three hundred and twelve"."""
    def below_thousand(m: int) -> list[str]:
        words = []
        if m >= 100:
            words += [ONES[m // 100], "hundred"] + (["and"] if m % 100 else [])
            m %= 100
        if m >= 20:
            words.append(TENS[m // 10] + (f"-{ONES[m % 10]}" if m % 10 else ""))
        elif m >= 10:
            words.append(TEENS[m - 10])
        elif m > 0:
            words.append(ONES[m])
        return words

    words = (below_thousand(n // 1000) + ["thousand"] if n >= 1000 else []) + below_thousand(n % 1000)
    return " ".join(words)


def number_zh(n: int) -> str:
    """Chinese numerals for 1 <= n < 100000: 42312 -> 四万二千三百一十二, 1005 -> 一千零五, 15 -> 十五."""
    units = ["", "十", "百", "千", "万"]
    digits = [int(d) for d in str(n)]
    out, zero = [], False
    for power, d in zip(range(len(digits) - 1, -1, -1), digits):
        if d == 0:
            zero = True
            continue
        if zero and out:
            out.append("零")
        zero = False
        out.append(DIGITS_ZH[d] + units[power])
    text = "".join(out)
    return text[1:] if text.startswith("一十") else text  # 15 is 十五, not 一十五


def write_demo_translation(directory: Path, num_train: int = 12000, num_test: int = 500, seed: int = 0) -> None:
    """English number phrases -> Chinese numerals, in the course's layout (test.raw.zh holds its `。`
    placeholders, as the course ships it): a deterministic mapping a Transformer learns in minutes."""
    rng = np.random.default_rng(seed)
    numbers = np.where(rng.random(num_train + num_test) < 0.5, rng.integers(1, 1000, num_train + num_test),
                       rng.integers(1, 100000, num_train + num_test))
    templates = rng.integers(len(DEMO_TEMPLATES), size=len(numbers))
    en = [DEMO_TEMPLATES[t][0].format(number_en(int(n))).capitalize() for n, t in zip(numbers, templates)]
    zh = [DEMO_TEMPLATES[t][1].format(number_zh(int(n))) for n, t in zip(numbers, templates)]
    directory.mkdir(parents=True, exist_ok=True)

    def write(name: str, lines: list[str]) -> None:
        (directory / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write(f"{TRAIN_PREFIX}.{SRC}", en[:num_train])
    write(f"{TRAIN_PREFIX}.{TGT}", zh[:num_train])
    write(f"{TEST_PREFIX}.{SRC}", en[num_train:])
    write(f"{TEST_PREFIX}.{TGT}", [PLACEHOLDER] * num_test)
