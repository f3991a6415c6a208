"""HW4: speaker classification from mel frames with self-attention (the sample's Transformer or Conformer).

Every layer honours a padding mask (True = padding), so a batch of whole utterances padded to its longest
gives the same predictions as each utterance alone.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from datamodules.lab_hooks import Remedy
from models.base import ClassificationTask


# torchaudio.models.Conformer would be the well-kept choice, but torchaudio's wheels are built for one exact
# torch release (the newest, 2.11, is older than the installed torch 2.15) and installing a matching one would
# replace torch for the whole environment. So the block is written here on torch.nn, after Gulati et al. 2020
# ("Conformer", Fig. 1), with LayerNorm instead of BatchNorm in the convolution module: BatchNorm would mix
# padded frames into the statistics and break "batched = one by one".
class FeedForward(nn.Sequential):
    """Conformer feed-forward module: LayerNorm, Linear x4, SiLU, Dropout, Linear, Dropout."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__(nn.LayerNorm(d_model), nn.Linear(d_model, dim_feedforward), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(dim_feedforward, d_model), nn.Dropout(dropout))


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise conv + GLU, depthwise conv over time, norm, SiLU, pointwise conv.

    Padded frames are zeroed before the depthwise conv, so they act as the conv's own zero padding.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd (got {kernel_size})")
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        x = F.glu(self.pointwise_in(self.norm(x)), dim=-1)
        if padding is not None:
            x = x.masked_fill(padding[..., None], 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return self.dropout(self.pointwise_out(F.silu(self.depthwise_norm(x))))


class ConformerBlock(nn.Module):
    """Half feed-forward, multi-head self-attention, convolution module, half feed-forward, LayerNorm."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, dim_feedforward, dropout)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel_size, dropout)
        self.ff2 = FeedForward(d_model, dim_feedforward, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        y = self.attention_norm(x)
        y = self.attention(y, y, y, key_padding_mask=padding, need_weights=False)[0]
        x = x + self.attention_dropout(y)
        x = x + self.conv(x, padding)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class AttentionPooling(nn.Module):
    """Self-attention pooling: a learned score per frame, softmax over the unpadded frames, weighted sum."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.score = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(x).squeeze(-1)
        if padding is not None:
            scores = scores.masked_fill(padding, float("-inf"))
        return torch.einsum("bt,btd->bd", scores.softmax(-1), x)


def mean_pooling(x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
    """The sample's `mean(dim=1)`, over the unpadded frames only."""
    if padding is None:
        return x.mean(1)
    keep = (~padding).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1)


class AMSoftmax(nn.Module):
    """Additive-margin softmax head (Wang et al. 2018): `scale` x cosine between the L2-normalised embedding
    and each class's normalised weight; the training loss subtracts `margin` from the true class's cosine."""

    def __init__(self, in_features: int, num_classes: int, margin: float, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits without the margin: `scale` x cosine (what prediction uses)."""
        return self.scale * F.normalize(embedding, dim=-1) @ F.normalize(self.weight, dim=-1).T

    def margin_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits - self.scale * self.margin * F.one_hot(target, logits.shape[-1]).to(logits.dtype)


class SpeakerNet(nn.Module):
    """Linear prenet, self-attention encoder, masked pooling, then a classifier head."""

    def __init__(self, n_mels: int, num_speakers: int, net: str, d_model: int, nhead: int, num_layers: int,
                 dim_feedforward: int, conv_kernel_size: int, dropout: float, pooling: str, head: str,
                 margin: float, scale: float) -> None:
        super().__init__()
        self.prenet = nn.Linear(n_mels, d_model)
        if net == "transformer":  # the sample's nn.TransformerEncoderLayer (post-norm, ReLU)
            self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                                                   batch_first=True) for _ in range(num_layers))
        else:
            self.layers = nn.ModuleList(ConformerBlock(d_model, nhead, dim_feedforward, conv_kernel_size, dropout)
                                        for _ in range(num_layers))
        self.attention_pooling = AttentionPooling(d_model) if pooling == "attention" else None
        if head == "amsoftmax":
            self.embedding = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
            self.head = AMSoftmax(d_model, num_speakers, margin, scale)
        else:  # the sample's pred_layer
            self.embedding = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU())
            self.head = nn.Linear(d_model, num_speakers)

    def forward(self, mels: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, n_mels) frames and (B, T) padding mask (True = padded) -> (B, num_speakers) logits."""
        # torch's attention "fast path" (eval mode) is ~3x slower on the CPU with a padding mask than the
        # ordinary path (benchmarks/hw4_speaker.py), so it is kept for GPUs only.
        fast_path = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(fast_path and mels.device.type != "cpu")
        try:
            x = self.prenet(mels)
            for layer in self.layers:
                if isinstance(layer, ConformerBlock):
                    x = layer(x, padding)
                else:
                    x = layer(x, src_key_padding_mask=padding)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast_path)
        x = mean_pooling(x, padding) if self.attention_pooling is None else self.attention_pooling(x, padding)
        return self.head(self.embedding(x))


class SpeakerClassifier(ClassificationTask):
    """Speaker identification from mel frames; `val_acc` drives early stopping and checkpointing.

    `predict` returns class probabilities (folds of a cross-validation can be averaged).

    Args:
        num_speakers: Classes; filled in from `mapping.json` (600 on the course data).
        n_mels: Mel bins per frame; filled in from `metadata.json` (40).
        net: `conformer` (self-attention + convolution blocks) or `transformer` (the sample's
            nn.TransformerEncoderLayer).
        d_model: Width of the prenet's output and of every block (the sample's 80).
        nhead: Attention heads (the sample's 2).
        num_layers: Encoder blocks (the sample's 1).
        dim_feedforward: Hidden width of the feed-forward modules (the sample's 256).
        conv_kernel_size: Depthwise convolution kernel of the Conformer's convolution module (odd).
        dropout: Dropout inside the blocks.
        pooling: `mean` (the sample's) or `attention` (self-attention pooling), both over unpadded frames.
        head: `linear` (the sample's Linear-ReLU-Linear) or `amsoftmax` (additive-margin softmax).
        margin: AM-Softmax margin subtracted from the true class's cosine.
        scale: AM-Softmax scale of the cosines.
        optimizer: Optimizer class and its arguments.
        lr_scheduler: Learning-rate schedule (e.g. callbacks.WarmupCosineLR), or none.
    """

    num_inputs = 2  # batches are (mels, padding mask, labels)
    remedies = ClassificationTask.remedies + (
        Remedy("bias", "a bigger model", "--model.d_model", times=2),
        Remedy("bias", "a bigger model", "--model.num_layers", plus=2),
        Remedy("overfitting", "dropout", "--model.dropout", plus=0.1, start=0.1, most=0.5),
        Remedy("overfitting", "fewer parameters", "--model.num_layers", plus=-1, least=1),
    )

    def __init__(
        self,
        num_speakers: int = 600,
        n_mels: int = 40,
        net: Literal["conformer", "transformer"] = "conformer",
        d_model: int = 80,
        nhead: int = 2,
        num_layers: int = 1,
        dim_feedforward: int = 256,
        conv_kernel_size: int = 15,
        dropout: float = 0.1,
        pooling: Literal["mean", "attention"] = "mean",
        head: Literal["linear", "amsoftmax"] = "linear",
        margin: float = 0.2,
        scale: float = 30.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_speakers, optimizer, lr_scheduler)
        self.save_hyperparameters()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} must be a multiple of nhead {nhead}")
        self.net = SpeakerNet(n_mels, num_speakers, net, d_model, nhead, num_layers, dim_feedforward,
                              conv_kernel_size, dropout, pooling, head, margin, scale)

    def forward(self, mels: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(mels, padding)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(self.net.head, AMSoftmax):
            logits = self.net.head.margin_logits(logits, labels)
        return super().loss(logits, labels)
