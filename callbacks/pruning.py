"""Optuna pruning for a `pytorch_lightning` fit: report the monitored metric after each validation, stop the
fit when the study's pruner says the trial is not worth finishing.

optuna-integration's `PyTorchLightningPruningCallback` subclasses `lightning.pytorch.Callback` (the `lightning`
package), which a `pytorch_lightning.Trainer` refuses; this is the small callback Optuna's maintainers suggest
writing instead. It is named in a fit's options by a key (`OptunaPruning(trial="study#3")`) that the search
registers for the trial it runs in this process (`register`). Only process 0 of a multi-device fit has the
trial: it talks to the study and broadcasts the decision, so every process stops at the same epoch. A fit
re-run later from the trial's config.yaml finds no registered trial and prunes nothing.

A pruned fit is stopped like an early-stopped one (its run keeps its checkpoints and record); the search reads
`pruned_at` afterwards and tells the study the trial was pruned (`optuna.TrialPruned`).
"""
import math

import pytorch_lightning as pl

_TRIALS: dict[str, object] = {}  # key -> the optuna.Trial this process runs


def register(key: str, trial) -> None:
    _TRIALS[key] = trial


def unregister(key: str) -> None:
    _TRIALS.pop(key, None)


class OptunaPruning(pl.Callback):
    """Reports `monitor` to an Optuna trial after each validation epoch and stops the fit when the study's
    pruner prunes the trial (used by `tune`; a no-op when no trial is registered under `trial`).

    Args:
        trial: The key the search registered its trial under (`<study>#<trial number>`).
        monitor: The metric to report; None: the model's `monitor`.
    """

    def __init__(self, trial: str, monitor: str | None = None) -> None:
        self.key = trial
        self.monitor = monitor
        self.pruned_at: int | None = None  # the epoch at which the trial was pruned
        self.reported: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at is not None:
            return
        monitor = self.monitor or getattr(pl_module, "monitor", None)
        prune = False
        trial = _TRIALS.get(self.key)
        if trainer.is_global_zero and trial is not None and monitor in trainer.callback_metrics:
            value, epoch = float(trainer.callback_metrics[monitor]), trainer.current_epoch
            if math.isfinite(value):  # (a non-finite loss is the NaN stop's to end)
                trial.report(value, epoch)
                self.reported.append((epoch, value))
                prune = trial.should_prune()
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True
