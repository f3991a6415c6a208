"""HW1: regression of the last day's `tested_positive` with an MLP."""

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection

from models.base import BaseTask
from models.nets import MLP


class CovidRegressor(BaseTask):
    """MLP regressor trained with MSE; `val_mse` drives early stopping and checkpointing."""

    monitor = "val_mse"
    mode = "min"

    def __init__(
        self,
        in_features: int,
        hidden_dims: list[int] = [64, 32],
        dropout: float = 0.0,
        batch_norm: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """`in_features` is filled in from the DataModule (the number of selected features)."""
        super().__init__(optimizer, lr_scheduler)
        self.save_hyperparameters()
        self.net = MLP(in_features, hidden_dims, 1, dropout=dropout, batch_norm=batch_norm)
        self.loss = nn.MSELoss()
        metrics = MetricCollection({"mse": MeanSquaredError(), "rmse": MeanSquaredError(squared=False)})
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def _evaluate(self, batch, metrics: MetricCollection, prefix: str) -> None:
        x, y = batch
        pred = self(x)
        self.log(f"{prefix}_loss", self.loss(pred, y), batch_size=len(y), sync_dist=True)
        metrics.update(pred, y)
        self.log_dict(metrics)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x)
