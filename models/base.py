"""The one base class every homework's LightningModule builds on."""

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable


class BaseTask(pl.LightningModule):
    """Optimizer and LR schedule injected from the CLI; `monitor`/`mode` tell shared callbacks what to watch.

    `--model.optimizer torch.optim.SGD --model.optimizer.momentum 0.9` (or Adagrad, RMSprop,
    Adam, AdamW, RAdam, ...) and `--model.lr_scheduler callbacks.WarmupCosineLR` need no code.
    """

    monitor: str = "val_loss"
    mode: str = "min"

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if hasattr(scheduler, "set_total_steps") and scheduler.total_steps is None:
            scheduler.set_total_steps(self.trainer.estimated_stepping_batches)
        config = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch"), "monitor": self.monitor}
        return {"optimizer": optimizer, "lr_scheduler": config}
