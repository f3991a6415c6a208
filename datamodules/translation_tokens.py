"""HW5's subword units and batches: one SentencePiece model over both languages (the course's settings), and
batches capped by padded tokens rather than sentences, as fairseq's `--max-tokens` does: sentences of similar
length share a batch, so little of each batch is padding. Apart from the DataModule (translation.py), which
caches the tokenizer and builds its loaders from these, because the model (models/translation.py) reads the
special ids too.
"""

import io
import os
import re

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from datamodules.base import SAMPLE_SEED, length_batches
from datamodules.errors import DataError

#: SentencePiece special ids (fairseq's order): these four are part of `vocab_size`.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


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
