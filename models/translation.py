"""HW5: English -> Chinese translation with a Transformer (default) or the course's RNN sample."""

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.loggers import WandbLogger
from torchmetrics import MeanMetric

from datamodules.errors import DataError
from datamodules.translation_tokens import BOS_ID, EOS_ID, PAD_ID
from datamodules.lab_hooks import Remedy
from models.base import BaseTask
from models.seq2seq import RNNSeq2Seq, TransformerSeq2Seq, beam_search, greedy_search


#: Settings chosen when decoding, not when training.
DECODING = ("beam_size", "len_penalty", "max_len_a", "max_len_b", "average_checkpoints")


class Translator(BaseTask):
    """Sequence-to-sequence translation trained with label-smoothed cross-entropy (teacher forcing).

    `val_bleu` (sacrebleu, Chinese tokenization) on the first `val_bleu_sentences` validation
    sentences drives early stopping and checkpointing; `predict` and `test` decode with beam search.
    Decoding settings (`beam_size`, `len_penalty`, `max_len_a/b`, `average_checkpoints`) are not saved
    in the checkpoint: they are chosen when decoding (`predict --model.beam_size 1 --ckpt_path best`).

    Args:
        vocab_size: Size of the joint SentencePiece vocabulary (filled in from the DataModule).
        arch: `transformer` (encoder-decoder, pre-norm) or `rnn` (the course's sample).
        embed_dim: Embedding width (the Transformer's model width).
        hidden_dim: Transformer: feed-forward width; RNN: encoder GRU width (the decoder's is twice it).
        encoder_layers: Encoder layers.
        decoder_layers: Decoder layers.
        attention_heads: Transformer attention heads.
        dropout: Dropout probability.
        label_smoothing: Label smoothing of the cross-entropy.
        beam_size: Beams for predict/test (1: greedy decoding).
        len_penalty: Beam scores are divided by length ** len_penalty (higher favours longer output).
        max_len_a: Output at most max_len_a * source tokens + max_len_b tokens.
        max_len_b: See max_len_a.
        average_checkpoints: Predict/test/validate with the average of the weights of this many checkpoints:
            the one given to --ckpt_path and the ones of the epochs before it in its folder (train with
            --checkpoint.save_top_k -1 to keep every epoch's). 1: no averaging.
        val_beam_size: Beams when decoding validation sentences for val_bleu (1: greedy, fastest).
        val_bleu_sentences: Validation sentences decoded each epoch for val_bleu (decoding is the slow part).
        optimizer: Optimizer (from the config).
        lr_scheduler: Learning-rate schedule (from the config).
    """

    monitor = "val_bleu"
    mode = "max"
    remedies = BaseTask.remedies + (
        Remedy("optimization", "gradient clipping", "--trainer.gradient_clip_val", value=1.0),
        Remedy("bias", "a bigger model", "--model.encoder_layers", plus=3),
        Remedy("bias", "a bigger model", "--model.decoder_layers", plus=3),
        Remedy("overfitting", "dropout", "--model.dropout", plus=0.1, start=0.1, most=0.5),
        Remedy("overfitting", "label smoothing", "--model.label_smoothing", plus=0.1, start=0.1, most=0.3),
    )

    def __init__(
        self,
        vocab_size: int = 8000,
        arch: Literal["transformer", "rnn"] = "transformer",
        embed_dim: int = 256,
        hidden_dim: int = 1024,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        attention_heads: int = 4,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        beam_size: int = 5,
        len_penalty: float = 1.0,
        max_len_a: float = 1.2,
        max_len_b: int = 10,
        average_checkpoints: int = 1,
        val_beam_size: int = 1,
        val_bleu_sentences: int = 500,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        # decoding settings stay out of the checkpoint, or LightningCLI would restore them over the command line's
        self.save_hyperparameters(ignore=list(DECODING))
        self.beam_size, self.len_penalty, self.max_len_a, self.max_len_b = beam_size, len_penalty, max_len_a, max_len_b
        if average_checkpoints < 1:
            raise DataError(f"--model.average_checkpoints must be at least 1 (got {average_checkpoints})")
        self.average_checkpoints = average_checkpoints
        if val_bleu_sentences < 1:
            raise DataError(f"--model.val_bleu_sentences must be at least 1 (got {val_bleu_sentences})")
        if arch == "transformer":
            self.net = TransformerSeq2Seq(vocab_size, embed_dim, hidden_dim, encoder_layers, decoder_layers,
                                          attention_heads, dropout, PAD_ID)
        else:
            self.net = RNNSeq2Seq(vocab_size, embed_dim, hidden_dim, encoder_layers, decoder_layers, dropout, PAD_ID)
        self.train_loss = MeanMetric(nan_strategy="disable")  # a diverging loss must show as NaN
        self.val_loss = MeanMetric(nan_strategy="disable")
        self._hypotheses: dict[int, str] = {}  # sentence index -> its translation, per evaluation epoch

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.net(src, tgt_in)

    def loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Label-smoothed cross-entropy per target token, and the number of target tokens."""
        logits = self(batch["src"], batch["tgt_in"])
        tokens = int(batch["tgt_out"].ne(PAD_ID).sum())
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["tgt_out"].flatten(), ignore_index=PAD_ID,
                               label_smoothing=self.hparams.label_smoothing)
        return loss, tokens

    def batch_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """The training loss of one batch and the target tokens it averages over (the lab's hook:
        datamodules/lab_hooks.py)."""
        return self.loss(batch)

    def translate(self, src: torch.Tensor, beam_size: int | None = None) -> list[list[int]]:
        """Token ids of the translations of `src` (B, S), without specials."""
        beam = self.beam_size if beam_size is None else beam_size
        if beam == 1:
            return greedy_search(self.net, src, BOS_ID, EOS_ID, PAD_ID, self.max_len_a, self.max_len_b)
        return beam_search(self.net, src, BOS_ID, EOS_ID, PAD_ID, beam, self.len_penalty, self.max_len_a,
                           self.max_len_b)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """With `average_checkpoints` k > 1, the weights loaded are the average of k epochs' checkpoints."""
        super().on_load_checkpoint(checkpoint)
        if self.average_checkpoints > 1 and self._trainer is not None and self.trainer.ckpt_path:
            checkpoint["state_dict"] = average_checkpoints(Path(self.trainer.ckpt_path), self.average_checkpoints)

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss, tokens = self.loss(batch)
        self.train_loss.update(loss.detach(), weight=tokens)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train_loss", self.train_loss.compute(), sync_dist=True)  # (equal in every process: synced)
        self.train_loss.reset()

    # --- evaluation ---------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        loss, tokens = self.loss(batch)
        self.val_loss.update(loss, weight=tokens)
        wanted = batch["index"] < self.hparams.val_bleu_sentences
        if wanted.any():
            self._decode_into_hypotheses(batch, wanted, self.hparams.val_beam_size)

    def on_validation_epoch_end(self) -> None:
        self.log("val_loss", self.val_loss.compute(), sync_dist=True)
        self.val_loss.reset()
        if self.trainer.sanity_checking:
            self._hypotheses = {}
            return
        datamodule = self.trainer.datamodule
        indices, hypotheses = self._gather_hypotheses()
        all_references = datamodule.val_references
        references = [all_references[i] for i in indices]
        self.log("val_bleu", corpus_bleu(hypotheses, references), sync_dist=True)  # (every process's sentences)
        if isinstance(self.logger, WandbLogger):  # a few translations to read beside the score
            rows = [[datamodule.val.src[i], ref, hyp]
                    for i, ref, hyp in list(zip(indices, references, hypotheses))[:20]]
            self.logger.log_table("val_samples", columns=["source", "reference", "translation"], data=rows)

    def test_step(self, batch, batch_idx):
        self._decode_into_hypotheses(batch, torch.ones_like(batch["index"], dtype=torch.bool), None)

    def on_test_epoch_end(self) -> None:
        indices, hypotheses = self._gather_hypotheses()
        references = self.trainer.datamodule.test_references
        self.log("test_bleu", corpus_bleu(hypotheses, [references[i] for i in indices]), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        """Each sentence's index in test.raw.en and its translation (token ids): the DataModule restores file order."""
        return {"index": batch["index"].cpu(), "tokens": self.translate(batch["src"])}

    def _decode_into_hypotheses(self, batch: dict, rows: torch.Tensor, beam_size: int | None) -> None:
        tokens = self.translate(batch["src"][rows], beam_size)
        texts = self.trainer.datamodule.detokenize(tokens)
        self._hypotheses.update(zip(batch["index"][rows].tolist(), texts))

    def _gather_hypotheses(self) -> tuple[list[int], list[str]]:
        """This epoch's (index, translation) pairs from every process, sorted by index."""
        pairs = list(self._hypotheses.items())
        self._hypotheses = {}
        if self.trainer.world_size > 1:
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, pairs)
            pairs = [p for part in gathered for p in part]
        pairs = sorted(dict(pairs).items())
        return [i for i, _ in pairs], [h for _, h in pairs]


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU with its Chinese tokenization (each CJK character a word)."""
    import sacrebleu  # here, not at import time: `--help` stays fast

    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh").score


def average_checkpoints(path: Path, k: int) -> dict[str, torch.Tensor]:
    """The mean of the weights in `path` and in the checkpoints of the k - 1 epochs before it (same folder),
    as fairseq's average_checkpoints.py does with the last k epochs: often a little better than any one."""
    chosen_epoch = torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    by_epoch: dict[int, Path] = {}
    for candidate in sorted(path.parent.glob("*.ckpt")):
        epoch = torch.load(candidate, map_location="cpu", weights_only=True)["epoch"]
        if epoch <= chosen_epoch:
            by_epoch.setdefault(epoch, candidate)
    epochs = sorted(by_epoch)[-k:]
    if len(epochs) < k:
        raise DataError(f"--model.average_checkpoints {k}: '{path.parent}' holds checkpoints of {len(by_epoch)} "
                        f"epoch(s) up to epoch {chosen_epoch}; train with --checkpoint.save_top_k -1 to keep every "
                        f"epoch's, or average fewer")
    total: dict[str, torch.Tensor] = {}
    for epoch in epochs:
        weights = torch.load(by_epoch[epoch], map_location="cpu", weights_only=True)["state_dict"]
        for name, value in weights.items():
            total[name] = total.get(name, 0) + value.double() if value.is_floating_point() else value
    return {name: (value / len(epochs)).float() if value.is_floating_point() else value
            for name, value in total.items()}
