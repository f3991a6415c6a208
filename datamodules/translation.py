"""HW5: English -> Chinese translation data in the course's layout (train_dev.raw.en/zh, test.raw.en/zh).

The course's cleaning (`clean_s`, `clean_corpus`: translation_text.py), one SentencePiece model over both sides
(trained once, cached beside the data), and batches capped by token count rather than sentence count, as
fairseq does (translation_tokens.py): sentences of similar length share a batch, so little of each batch is
padding. The demo set: translation_demo.py.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torch.utils.data import DataLoader

from datamodules.atomic import build_once
from datamodules.errors import DataError
from datamodules.base import SAMPLE_SEED, EpochLoader, HomeworkDataModule, split_indices
from datamodules.translation_demo import write_demo_translation
from datamodules.translation_text import (PLACEHOLDER, SRC, TEST_PREFIX, TGT, TRAIN_PREFIX, clean_corpus, clean_s,
                                          detokenize_zh, read_lines)
from datamodules.translation_tokens import SentencePairs, SubwordTokenizer, TokenBatchSampler

log = logging.getLogger(__name__)

#: The course's vocabulary size: the default, when the corpus is large enough to fill it.
COURSE_VOCAB_SIZE = 8000


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
    memory_args = ("max_tokens",)
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
