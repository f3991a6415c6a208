"""Checkpoints a crashed run can resume from: `last.ckpt` is always the newest state, written atomically."""

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.atomic import replacing


class HomeworkCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (the best checkpoints by the model's metric), whose `last.ckpt` is the state
    at the end of the newest completed epoch, or of the newest N-th optimizer step for long epochs.

    Why a subclass: Lightning 2.6 refreshes `last.ckpt` only at a step where it also saves a top-k
    checkpoint, so once a run stops improving `last.ckpt` stays at the newest *best* epoch (an ML2022 HW1
    fit that early-stopped after epoch ~340 kept epoch 140), and `--ckpt_path last` would resume from there.

    Args:
        save_last_every_n_train_steps: Also refresh last.ckpt every N optimizer steps (0: only at the end of
            each epoch); for long epochs (HW4, HW5), so a crash loses at most N steps.
    """

    def __init__(self, *args, save_last_every_n_train_steps: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if save_last_every_n_train_steps < 0:
            raise ValueError(f"--checkpoint.save_last_every_n_train_steps must be 0 or more "
                             f"(got {save_last_every_n_train_steps})")
        self.save_last_every_n_train_steps = save_last_every_n_train_steps
        self._last_saved_step = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self.save_last_every_n_train_steps
        # (>=, not %: HW1's whole-epoch Lightning steps make many optimizer steps at once)
        if every and trainer.global_step - self._last_saved_step >= every:
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        # skipped where Lightning's own save already wrote last.ckpt at this step (or while sanity checking)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_saved_step = trainer.global_step


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it and renames it into place, so a run killed while
    saving keeps its previous `last.ckpt` intact.

    Why: Lightning writes local checkpoints through an fsspec transaction whose temporary file lies in the
    system temp directory; when that is another file system the final move is a copy, and a kill during it
    leaves a truncated checkpoint. (No fsync: a killed process cannot lose what it handed to the kernel, and
    HW1 saves every 40 ms epoch; a power cut is another matter.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with replacing(Path(path)) as f:
            torch.save(checkpoint, f)
