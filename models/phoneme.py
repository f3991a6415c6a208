"""HW2: frame-wise phoneme classification from each frame's window of neighbours."""

from typing import Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from datamodules.lab_hooks import Remedy
from models.base import ClassificationTask
from models.nets import MLP
from models.rnn import WindowRNN


class PhonemeClassifier(ClassificationTask):
    """Cross-entropy classifier of a frame's phoneme from its window; `val_acc` drives early stopping.

    Args:
        num_classes: Phoneme classes (41 libriphone, 39 timit_11); filled in from the DataModule.
        feature_dim: Features per frame (39); filled in from the DataModule.
        concat_nframes: Frames per window; filled in from the DataModule's `concat_nframes`.
        net: `lstm` / `gru`: a bidirectional RNN over the window's frames; `mlp`: the frames concatenated
            (39 x concat_nframes inputs) into Linear blocks, as the sample code does.
        hidden_dim: RNN units per direction, or the width of each MLP block.
        num_layers: RNN layers, or MLP blocks (the sample's `hidden_layers=1` is 2 blocks: it adds the input one).
        dropout: Dropout between RNN layers and in the head, or after each MLP block.
        batch_norm: BatchNorm in the RNN head, or after each MLP block's Linear.
        label_smoothing: Cross-entropy label smoothing.
        optimizer: Optimizer class and its arguments.
        lr_scheduler: Learning-rate schedule (e.g. callbacks.WarmupCosineLR), or none.
    """

    remedies = ClassificationTask.remedies + (
        Remedy("optimization", "normalization", "--model.batch_norm", value=True),
        Remedy("bias", "a bigger model", "--model.hidden_dim", times=2),
        Remedy("bias", "a bigger model", "--model.num_layers", plus=1),
        Remedy("overfitting", "dropout", "--model.dropout", plus=0.2, start=0.2, most=0.7),
        Remedy("overfitting", "fewer parameters", "--model.hidden_dim", times=0.5),
        Remedy("overfitting", "label smoothing", "--model.label_smoothing", plus=0.1, start=0.1, most=0.3),
    )

    def __init__(
        self,
        num_classes: int = 41,
        feature_dim: int = 39,
        concat_nframes: int = 21,
        net: Literal["lstm", "gru", "mlp"] = "lstm",
        hidden_dim: int = 256,
        num_layers: int = 3,
        dropout: float = 0.0,
        batch_norm: bool = True,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler, label_smoothing)
        if hidden_dim < 1 or num_layers < (0 if net == "mlp" else 1):  # (an MLP of 0 hidden layers is linear)
            fewest = "no hidden layer" if net == "mlp" else "1 layer"
            raise ValueError(f"--model.hidden_dim {hidden_dim} --model.num_layers {num_layers}: "
                             f"{dict(lstm='an LSTM', gru='a GRU', mlp='an MLP')[net]} needs at least 1 unit per layer "
                             f"and {fewest}")
        self.save_hyperparameters()
        if net == "mlp":
            self.net = MLP(feature_dim * concat_nframes, [hidden_dim] * num_layers, num_classes, dropout, batch_norm)
        else:
            self.net = WindowRNN(feature_dim, num_classes, net, hidden_dim, num_layers, dropout, batch_norm)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, concat_nframes, feature_dim) -> (B, num_classes) logits."""
        return self.net(windows.flatten(1) if self.hparams.net == "mlp" else windows)
