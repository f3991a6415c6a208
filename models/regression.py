"""HW1: regression of the last day's `tested_positive` with an MLP."""

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanSquaredError

from datamodules.base import MinibatchesPerStep
from datamodules.lab_hooks import Remedy
from models.base import MinibatchLoopTask
from models.nets import MLP


class CovidRegressor(MinibatchLoopTask):
    """MLP regressor trained with MSE; `val_mse` drives early stopping and checkpointing.

    Args:
        in_features: Number of input features (filled in from the data).
        hidden_dims: Widths of the hidden layers, e.g. [64, 32].
        dropout: Dropout probability after each hidden layer (regularization).
        batch_norm: Batch normalization after each hidden linear layer.
        optimizer: Optimizer class and its arguments, e.g. torch.optim.SGD with lr and momentum.
        lr_scheduler: Learning-rate schedule, e.g. callbacks.WarmupCosineLR; null for a constant lr.
        minibatches_per_step: Filled in from --data.minibatches_per_step.
    """

    monitor = "val_mse"
    mode = "min"
    remedies = MinibatchLoopTask.remedies + (
        Remedy("optimization", "normalization", "--model.batch_norm", value=True),
        Remedy("bias", "a bigger model", "--model.hidden_dims", times=2),
        Remedy("overfitting", "fewer parameters", "--model.hidden_dims", times=0.5),
        Remedy("overfitting", "dropout", "--model.dropout", plus=0.2, start=0.2, most=0.7),
    )

    def __init__(
        self,
        in_features: int,
        hidden_dims: list[int] = [64, 32],
        dropout: float = 0.0,
        batch_norm: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        minibatches_per_step: MinibatchesPerStep = 1,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, minibatches_per_step)
        if any(width < 1 for width in hidden_dims):  # ([] is linear regression)
            raise ValueError(f"--model.hidden_dims {list(hidden_dims)}: every layer needs at least 1 unit")
        self.save_hyperparameters()
        self.net = MLP(in_features, hidden_dims, 1, dropout=dropout, batch_norm=batch_norm)
        self.loss = nn.MSELoss()
        # Epoch totals are accumulated in torchmetrics and logged once per epoch: HW1's batches take
        # microseconds, and Lightning's per-call `self.log` bookkeeping costs more than the model.
        self.val_mse = MeanSquaredError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def minibatch_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return self.loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_mse.update(self(x), y)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_mse, "val")

    def _log_epoch(self, metric: MeanSquaredError, prefix: str) -> None:
        mse = metric.compute()
        metric.reset()
        # the loss is the MSE; RMSE is what ML2021's Kaggle graded
        self.log_dict({f"{prefix}_loss": mse, f"{prefix}_mse": mse, f"{prefix}_rmse": mse.sqrt()},
                      sync_dist=True)  # (equal in every process: compute() synced them)

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x)
