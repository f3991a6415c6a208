"""The base classes every homework's LightningModule builds on."""

import math
from typing import ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.base import MinibatchesPerStep, provided
from datamodules.errors import DataError
from datamodules.lab_hooks import Remedy

#: Schedules that already warm up; optimizers that already adapt their learning rate per parameter.
WARMUP_SCHEDULES = ("callbacks.WarmupCosineLR", "callbacks.InverseSqrtLR")
ADAPTIVE_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.RAdam", "torch.optim.NAdam")


class BaseTask(pl.LightningModule):
    """Optimizer and LR schedule injected from the CLI; `monitor`/`mode` tell shared callbacks what to watch.

    `--model.optimizer torch.optim.SGD --model.optimizer.momentum 0.9` (or Adagrad, RMSprop,
    Adam, AdamW, RAdam, ...) and `--model.lr_scheduler callbacks.WarmupCosineLR` need no code.

    Args:
        optimizer: Optimizer class and its arguments.
        lr_scheduler: Learning-rate schedule; null for a constant lr.
    """

    #: The validation metric that picks the checkpoint and stops early (and the lab reads), and which way is better.
    monitor: str = "val_loss"
    mode: str = "min"
    #: What every homework's task provides (checked when its class is defined: a shared base in between says
    #: `abstract=True`); `batch_loss` is `critical`'s and the lab's hook. Its `__init__` calls
    #: `self.save_hyperparameters()`, so that a checkpoint rebuilds the model (checked when one is saved).
    required: ClassVar[tuple[str, ...]] = ("forward", "training_step", "validation_step", "predict_step", "batch_loss")
    #: The lecture's remedies as this task's flags (datamodules/lab_hooks.py); subclasses add their own to these.
    remedies: ClassVar[tuple[Remedy, ...]] = (
        Remedy("optimization", "learning rate", "--model.optimizer.lr", times=(0.3, 3.0),
               note="(or look first: fit --find_lr true)"),
        Remedy("optimization", "an adaptive learning rate", "--model.optimizer", value="torch.optim.AdamW",
               unless=ADAPTIVE_OPTIMIZERS),
        Remedy("optimization", "warmup", "--model.lr_scheduler", value="callbacks.WarmupCosineLR",
               unless=WARMUP_SCHEDULES),
        Remedy("overfitting", "regularization", "--model.optimizer.weight_decay", times=5, start=0.01, most=0.5),
    )

    def __init_subclass__(cls, abstract: bool = False, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [name for name in cls.required if not provided(cls, name, BaseTask)]
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)} (each homework's task does: see "
                            f"models/base.py BaseTask and docs/architecture.md)")
        if cls.mode not in ("min", "max") or not cls.monitor.startswith("val_"):
            raise TypeError(f"{cls.__name__}: monitor {cls.monitor!r}, mode {cls.mode!r}; the monitor is a validation "
                            f"metric (val_...) and the mode 'min' or 'max'")

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

    def batch_loss(self, batch) -> tuple[torch.Tensor, int]:
        """The training loss of one batch and its size: what `critical` differentiates (datamodules/lab_hooks.py)."""
        raise NotImplementedError

    def run_record(self) -> dict:
        """What run.json keeps about this task beside the shared fields (homework/runs; HW13: the student's size and
        budget); none by default."""
        return {}

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if hasattr(scheduler, "set_total_steps") and scheduler.total_steps is None:
            scheduler.set_total_steps(self.total_optimizer_steps())
        config = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
        if self.automatic_optimization:  # (ReduceLROnPlateau's metric; manual optimization has no such key)
            config["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def total_optimizer_steps(self) -> int:
        """How many optimizer steps the whole fit makes (what a per-step schedule spreads over)."""
        return self.trainer.estimated_stepping_batches

    def check_trainer(self, trainer: pl.Trainer) -> None:
        """Raise DataError for trainer settings this model cannot train with (the CLI calls it before `fit`)."""

    def check_optimizer(self) -> None:
        """Build the optimizer and schedule once on a stand-in parameter, so a bad setting (a negative
        learning rate, an unknown argument) is one line before training rather than a traceback inside it."""
        probe = torch.nn.Parameter(torch.zeros(1))
        try:
            optimizer = self.optimizer([probe])
        except (ValueError, TypeError) as err:
            raise DataError(f"--model.optimizer: {err}") from None
        if self.lr_scheduler is not None:
            try:
                self.lr_scheduler(optimizer)
            except (ValueError, TypeError) as err:
                raise DataError(f"--model.lr_scheduler: {err}") from None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Which homework trained this, so another homework's CLI refuses it in one line."""
        if not self.hparams:
            raise TypeError(f"{type(self).__name__}.__init__ must call self.save_hyperparameters(): without them "
                            f"a checkpoint cannot rebuild the model")
        checkpoint["homework"] = getattr(self.trainer.datamodule, "homework", None)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint whose model does not fit the data now read (other features, classes, speakers, ...)
        is one line, before its weights are loaded (or fail to, in a size-mismatch traceback)."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None)
        check_data(checkpoint, self, getattr(datamodule, "data_dir", None), getattr(trainer, "ckpt_path", None))

    def on_train_start(self) -> None:
        """Resuming to train longer (`fit --ckpt_path last --trainer.max_epochs N`): the per-step schedule
        restored from the checkpoint still ends where the old run ended (learning rate 0), so it is re-spanned
        over the new total, as if the run had been planned that long."""
        if self.trainer.global_step == 0:
            return
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            total = self.total_optimizer_steps() if hasattr(scheduler, "set_total_steps") else None
            if total is not None and scheduler.total_steps != total:
                old = scheduler.total_steps
                scheduler.set_total_steps(total)
                rank_zero_info(f"Resumed at step {self.trainer.global_step}: the learning-rate schedule now spans "
                               f"{total} steps (it ended at {old}); lr goes on at {scheduler.get_last_lr()[0]:.3g}")
        lrs = [group["lr"] for optimizer in self.trainer.optimizers for group in optimizer.param_groups]
        if lrs and max(lrs) == 0:
            rank_zero_warn("Resumed with learning rate 0 (the schedule restored from the checkpoint has ended), "
                           "so training will not change the model; use callbacks.WarmupCosineLR, which is "
                           "re-spanned on resume, or start a new fit")


class MinibatchLoopTask(BaseTask, abstract=True):
    """A BaseTask that can train on several minibatches per Lightning step; subclasses write `minibatch_loss`
    (batches are tuples of in-memory tensors). It logs `train_loss`, the epoch's mean minibatch loss.

    With `minibatches_per_step` 1 this is ordinary automatic optimization. Otherwise each training batch
    is a list of minibatches (from `datamodules.base.MinibatchSampler`) and `training_step` runs
    zero_grad / backward / step over each of them through Lightning's manual-optimization API, so the
    precision plugin, optimizer hooks and `global_step` (one per optimizer step) work as usual.
    LR schedulers are stepped as Lightning would: "step" ones after every optimizer step, "epoch" ones
    (ReduceLROnPlateau included, on the validation metric) at the end of each epoch.
    Why: a step of HW1's MLP takes ~0.3 ms and Lightning's automatic loop adds ~0.4 ms to each; with
    a whole epoch per Lightning step HW1 trains in ~0.7x the course's plain loop's time instead of ~1x
    (benchmarks/hw1_speed.py).
    Lightning forbids `gradient_clip_val` and `accumulate_grad_batches` with manual optimization:
    `check_trainer` asks for `--data.minibatches_per_step 1` for those. On several devices (DDP) each step
    is one minibatch (the sampler's groups are of one), which trains as `--data.minibatches_per_step 1` does.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        minibatches_per_step: MinibatchesPerStep = 1,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        self.automatic_optimization = minibatches_per_step == 1
        # accumulated in torchmetrics and logged once per epoch: Lightning's `self.log` costs ~0.3 ms a call
        self.train_loss = MeanMetric(nan_strategy="disable")  # a diverging loss must show as NaN, not be dropped

    def minibatch_loss(self, batch) -> torch.Tensor:
        """The training loss of one minibatch."""
        raise NotImplementedError

    def batch_loss(self, batch) -> tuple[torch.Tensor, int]:
        """The training loss of one minibatch and its size (the lab's hook: datamodules/lab_hooks.py)."""
        return self.minibatch_loss(batch), len(batch[0])

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            loss = self.minibatch_loss(batch)
            self.train_loss.update(loss.detach(), weight=len(batch[0]))
            return loss
        optimizer, losses, max_steps = self.optimizers(), [], self.trainer.max_steps
        for minibatch in batch:
            if max_steps != -1 and self.trainer.global_step >= max_steps:  # Lightning checks between its steps only
                break
            optimizer.zero_grad()
            loss = self.minibatch_loss(minibatch)
            self.manual_backward(loss)
            optimizer.step()
            self._step_schedulers("step")
            losses.append(loss.detach())
        sizes = torch.tensor([len(b[0]) for b in batch[:len(losses)]], device=self.device)
        if losses:
            self.train_loss.update(torch.stack(losses), weight=sizes)

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:
            self._step_schedulers("epoch")
        # compute() syncs every process's share; sync_dist (a mean of equal values) says so to Lightning
        self.log("train_loss", self.train_loss.compute(), sync_dist=True)
        self.train_loss.reset()

    def _step_schedulers(self, interval: str) -> None:
        """What Lightning's loop does for the schedulers under automatic optimization."""
        count = self.trainer.global_step if interval == "step" else self.current_epoch + 1
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency:
                continue
            metric = None
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                metric = self.trainer.callback_metrics.get(self.monitor)
                if metric is None:
                    raise RuntimeError(f"ReduceLROnPlateau watches '{self.monitor}', which was not logged "
                                       f"(logged: {sorted(self.trainer.callback_metrics)})")
            self.lr_scheduler_step(config.scheduler, metric)

    def check_trainer(self, trainer: pl.Trainer) -> None:
        fraction = trainer.limit_train_batches
        if not self.automatic_optimization and (
                trainer.gradient_clip_val or trainer.accumulate_grad_batches != 1
                or (isinstance(fraction, float) and fraction < 1.0)):
            raise DataError("--trainer.gradient_clip_val, --trainer.accumulate_grad_batches and a fractional "
                            "--trainer.limit_train_batches need one minibatch per Lightning step: add "
                            "--data.minibatches_per_step 1")

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self.automatic_optimization and self.trainer.world_size > 1:
            rank_zero_info(f"Training on {self.trainer.world_size} processes: one minibatch per step "
                           f"(--data.minibatches_per_step applies to one device)")

    def total_optimizer_steps(self) -> int:
        if self.automatic_optimization or self.trainer.world_size > 1:  # (DDP: one minibatch per step)
            return super().total_optimizer_steps()
        trainer = self.trainer
        trainer.estimated_stepping_batches  # checks max_epochs / max_steps and loads the training data
        per_epoch = getattr(getattr(trainer.train_dataloader, "sampler", None), "minibatches_per_epoch", None)
        if per_epoch is None:
            raise TypeError("minibatches_per_step > 1 needs a training loader built by datamodules.base.batch_loader")
        total = per_epoch * trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
        return int(min(total, trainer.max_steps if trainer.max_steps != -1 else math.inf))


class ClassificationTask(BaseTask, abstract=True):
    """Cross-entropy classification: `train_acc`/`val_acc` per epoch (`val_acc` drives early stopping and
    checkpointing), and `predict` returns class probabilities, so a cross-validation's folds can be averaged.

    Subclasses build the network in `forward`. A batch holds the model's `num_inputs` inputs, then (for
    training and validation) the labels: HW2's is (windows, labels), HW4's (mels, padding, labels).
    """

    monitor = "val_acc"
    mode = "max"
    num_inputs: int = 1

    def __init__(
        self,
        num_classes: int,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits, labels)

    def batch_loss(self, batch) -> tuple[torch.Tensor, int]:
        """The training loss of one (inputs..., labels) batch and its size (the lab's hook:
        datamodules/lab_hooks.py)."""
        labels = batch[self.num_inputs]
        return self.loss(self(*batch[:self.num_inputs]), labels), len(labels)

    def training_step(self, batch, batch_idx):
        inputs, labels = batch[:self.num_inputs], batch[self.num_inputs]
        logits = self(*inputs)
        loss = self.loss(logits, labels)
        self.train_acc.update(logits, labels if labels.dim() == 1 else labels.argmax(1))  # MixUp/CutMix: the main class
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        inputs, labels = batch[:self.num_inputs], batch[self.num_inputs]
        logits = self(*inputs)
        self.val_acc.update(logits, labels)
        self.log("val_loss", self.loss(logits, labels), batch_size=len(labels), sync_dist=True)
        self.log("val_acc", self.val_acc, prog_bar=True)
        return {"preds": logits.argmax(1)}  # (read by callbacks.ClassificationPlots)

    def predict_step(self, batch, batch_idx):
        return self(*batch[:self.num_inputs]).softmax(-1)


def plain(value):
    """A hyperparameter as comparable data (tuples and lists alike); None for what is not plain data."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return None


def check_data(checkpoint: dict, model, data_dir, path=None) -> None:
    """Raise DataError when the data now read gives the model other settings than it was trained with.

    The CLI restores every model setting from the checkpoint, then the data sets those it decides (its
    links: number of features, classes, speakers, vocabulary size, ...). So a saved setting that differs
    from the model's now was changed by the data: the weights cannot fit it (or would mean other things).
    Called when a checkpoint is loaded, before its weights are (`BaseTask.on_load_checkpoint`).
    """
    saved = checkpoint.get("hyper_parameters", {})
    changed = [(key, saved[key], value) for key, value in model.hparams.items()
               if not key.startswith("_") and key in saved and plain(value) is not None
               and plain(saved[key]) is not None and plain(value) != plain(saved[key])]
    if changed:
        was = ", ".join(f"{key} {before}" for key, before, _ in changed)
        now = ", ".join(f"{key} {after}" for key, _, after in changed)
        raise DataError(f"{path or 'the checkpoint'}: this model was trained on data with {was}, but the data in "
                        f"'{data_dir}' gives {now}; use it with data like its training data, or train a model on this")
