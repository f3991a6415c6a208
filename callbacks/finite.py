"""A training loss that turns NaN or infinite stops the fit at once, in one line a student can act on.

Early stopping (`check_finite`) notices only at the next validation, after the rest of the epoch has
trained on NaN weights (and may have saved them as `last.ckpt`).
"""

import math

import pytorch_lightning as pl
import torch
from torchmetrics import Metric

from datamodules.errors import DataError


class NonFiniteLoss(DataError):
    """The training loss became NaN or infinite (a DataError, so the CLI prints it as one `error:` line)."""


class StopOnNonFiniteLoss(pl.Callback):
    """Stops training when the training loss becomes NaN/inf, saying which loss, when, and what to try.

    Watches the loss `training_step` returns (automatic optimization) or, where the step returns none
    (manual optimization, e.g. HW1's whole-epoch steps in `models.base.MinibatchLoopTask`), the torchmetrics
    metric `metric` of the module that accumulates the minibatch losses (its states turn NaN with any one).

    Cost: the losses of the last `every_n_steps` steps are kept on their device, and read back (one host
    sync) every `every_n_steps` steps, before each validation and at the end of each epoch, so a GPU is not
    made to wait at every step. On the CPU reading a scalar costs nothing, so it checks every step. On several
    devices the processes agree at each check (one small all-reduce), so all stop together.
    The exception propagates through Lightning: the CLI keeps the run's earlier checkpoints and records the
    run as failed.

    Under 16-mixed a gradient scaler is at work: a step whose loss or gradients overflowed fp16 is skipped (the
    weights are left as they were) and the scale halved, which is normal in the first steps. There a non-finite
    loss stops the fit only when the weights themselves have turned non-finite, or after `max_skipped_steps`
    non-finite losses in a row (a scale of 2^16 needs at most 16 halvings; more is a loss that diverged or a
    model that overflows fp16 whatever the scale).

    Args:
        every_n_steps: Steps between checks; None: every step on the CPU, the trainer's `log_every_n_steps` on
            an accelerator.
        metric: Name of the module's loss-accumulating metric, watched under manual optimization.
        max_skipped_steps: Under a gradient scaler, the non-finite losses in a row it may skip before the fit stops.
    """

    def __init__(self, every_n_steps: int | None = None, metric: str = "train_loss",
                 max_skipped_steps: int = 16) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive (got {every_n_steps})")
        self.every_n_steps, self.metric, self.max_skipped_steps = every_n_steps, metric, max_skipped_steps
        self._skipped = 0  # non-finite losses in a row under a gradient scaler
        self._losses: torch.Tensor | None = None  # the pending steps' losses, on their device
        self._where: list[tuple[int, int, int]] = []  # (global step, epoch, batch) of each pending loss

    def _period(self, trainer: pl.Trainer, device: torch.device) -> int:
        if self.every_n_steps is not None:
            return self.every_n_steps
        return 1 if device.type == "cpu" else max(1, trainer.log_every_n_steps)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            period = self._period(trainer, loss.device)
            if self._losses is None or len(self._losses) != period or self._losses.device != loss.device:
                self._check(trainer, pl_module)
                self._losses = torch.zeros(period, device=loss.device)
            self._losses[len(self._where)] = loss.detach().float()  # a copy on the device: no sync
            self._where.append((trainer.global_step, trainer.current_epoch, batch_idx))
            if len(self._where) == period:
                self._check(trainer, pl_module)
        elif not pl_module.automatic_optimization:
            if trainer.global_step % self._period(trainer, pl_module.device) == 0:
                self._check(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, pl_module)  # before a NaN model is validated and saved as last.ckpt

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, pl_module)

    # --- checks -----------------------------------------------------------------------------------
    def _metric_state(self, pl_module: pl.LightningModule) -> torch.Tensor | None:
        """The sum of the watched metric's tensor states: NaN/inf as soon as one accumulated loss is."""
        metric = getattr(pl_module, self.metric, None)
        if not isinstance(metric, Metric):
            return None
        states = [v for v in metric.metric_state.values() if isinstance(v, torch.Tensor)]
        return torch.stack([s.float().sum() for s in states]).sum() if states else None

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Read the pending losses back (one sync) and stop at the first NaN/inf among them. Every process
        calls this at the same points, and all stop together (one stopping alone would leave the others
        waiting for it in their next collective)."""
        found = None  # (value, when)
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        if self._where:
            values = self._losses[:len(self._where)].tolist()
            where, self._where = self._where, []
            for v, (step, epoch, batch) in zip(values, where):
                self._skipped = 0 if math.isfinite(v) else self._skipped + 1
                if found is None and not math.isfinite(v) and (not scaled or self._skipped >= self.max_skipped_steps):
                    found = (v, f"at step {step} (epoch {epoch}, batch {batch})"
                                + (f", the {self._skipped}th in a row under {trainer.precision}'s gradient scaler"
                                   if scaled else ""))
                elif found is None and not math.isfinite(v) and not self._weights_finite(pl_module):
                    found = (v, f"at step {step} (epoch {epoch}, batch {batch}), and the weights with it")
        if found is None and not pl_module.automatic_optimization:
            state = self._metric_state(pl_module)
            value = math.nan if state is None else float(state)
            if state is not None and not math.isfinite(value) and (not scaled or not self._weights_finite(pl_module)):
                found = (value, f"in epoch {trainer.current_epoch} (by optimizer step {trainer.global_step})")
        if trainer.strategy.reduce_boolean_decision(found is not None, all=False) and found is None:
            found = (math.nan, "in another process")
        if found is not None:
            self._stop(trainer, *found)

    @staticmethod
    def _weights_finite(pl_module: pl.LightningModule) -> bool:
        """Every parameter is finite (one host sync; read only after a non-finite loss under a gradient scaler)."""
        flags = [torch.isfinite(p).all() for p in pl_module.parameters()]
        return bool(torch.stack(flags).all()) if flags else True

    def _stop(self, trainer: pl.Trainer, value: float, when: str) -> None:
        checkpoint = trainer.checkpoint_callback
        saved = getattr(checkpoint, "best_model_path", "") or getattr(checkpoint, "last_model_path", "")
        kept = (f"the checkpoints saved before it are kept in {checkpoint.dirpath}" if saved
                else "no checkpoint had been saved yet")
        raise NonFiniteLoss(
            f"training stopped: the training loss ({self.metric}) became {value} {when}; {kept}. "
            f"Try a smaller learning rate (--model.optimizer.lr), gradient clipping (--trainer.gradient_clip_val 1.0), "
            f"{'--trainer.precision 32-true (fp16 overflows above 65504), ' if trainer.precision == '16-mixed' else ''}"
            f"or look for extreme values in the inputs")
