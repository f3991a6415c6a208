"""What a command prints: known-harmless noise silenced (narrowly, by message), one line per epoch
when the output is not a terminal, and errors as one last line."""

import logging
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar

from homework.command_line import command  # noqa: F401 (this module's name before it moved)

#: Warnings that carry no information for a student of this project, each matched by its message.
HARMLESS_WARNINGS = (
    # the Kaggle writer collects whole-epoch predictions and never uses per-batch indices
    r".*Couldn't infer the batch indices fetched from your dataloader.*",
    # metrics are logged per epoch; a short epoch logs no per-step values, which is intended
    r".*is smaller than the logging interval Trainer\(log_every_n_steps.*",
    # every command has its own run directory, so a checkpoint from another run is always from "another
    # dirpath": evaluating saves nothing, and a resumed fit keeps its own best in its new directory
    r".*The dirpath has changed from .* won't be reloaded.*",
    # evaluating needs only the weights: the fit's own callbacks (learning curve, RNG states) have nothing to do
    r".*callbacks used to create the checkpoint need to be provided.*",
    # `fit --resume` continues in the run's own checkpoint directory, which holds its checkpoints so far
    r".*Checkpoint directory .* exists and is not empty.*",
    # raised only while no validation has run (Lightning raises an error once one has): a fit that ends before
    # validating (`--trainer.max_steps 3`) says itself that it kept only last.ckpt
    r".*`ModelCheckpoint\(monitor=.*could not find the monitored key in the returned metrics.*",
    # raised inside torch/Lightning's own imports, not by anything a student wrote
    r".*torch\.utils\._pytree\._register_pytree_node.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
)
#: Lightning's advertisements for its cloud services, printed at every start.
HARMLESS_LOG_LINES = ("try installing [litlogger]", "try installing [litmodels]")


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in HARMLESS_LOG_LINES)


def silence_known_noise() -> None:
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning_fabric.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines())


def fail(message: str) -> None:
    """A user mistake: one line on stderr, the last thing printed, and exit code 2."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class EpochLines(ProgressBar):
    """A progress "bar" for logs and notebooks piped to a file: one line per epoch, no carriage returns.

    tqdm's redrawn bar turns into thousands of lines once redirected (a 20-second HW1 demo fit made
    1,442); here an epoch is one line with its metrics, the best score so far and its duration.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = time.perf_counter()
        self._printed = -1  # the last epoch printed
        self._resumed = False

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resumed = trainer.ckpt_path is not None  # the epochs before were printed by the first process

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._resumed:
            self._resumed, self._printed = False, trainer.current_epoch - 1
        self._print_epoch(trainer, trainer.current_epoch - 1)
        self._started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_epoch(trainer, trainer.current_epoch - 1)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Ctrl-C after an epoch's checkpoint was saved but before the next epoch began (where a fast epoch spends
        its time): that epoch is printed, so the last line is the epoch kept. Its training metrics are logged only
        when the next epoch begins, so its validation metrics alone."""
        if not isinstance(exception, KeyboardInterrupt) or trainer.world_size > 1:
            return  # (on several processes its metrics would sync with processes a signal may have ended)
        ckpt = trainer.checkpoint_callback
        last = Path(getattr(ckpt, "last_model_path", "") or "")
        if not last.is_file():
            return
        try:
            import torch

            saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
            epoch, ended = saved["epoch"], saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"]
        except (OSError, RuntimeError, KeyError, TypeError, ValueError):  # (not one this fit wrote: say nothing)
            return
        if ended and epoch > self._printed:
            self._print_epoch(trainer, epoch, ("val",))

    def _print_epoch(self, trainer: pl.Trainer, epoch: int, kinds: tuple[str, ...] = ("train", "val")) -> None:
        """Epoch `epoch` is over: only now are its train metrics final (the model logs them after callbacks)."""
        if epoch < self._printed + 1 or not (self._enabled and trainer.is_global_zero):
            return
        self._printed = epoch
        metrics = {k.removesuffix("_epoch"): float(v) for k, v in trainer.callback_metrics.items()
                   if v.numel() == 1 and k.split("_")[0] in kinds and not k.endswith("_step")}
        shown = "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        total = f"/{trainer.max_epochs - 1}" if trainer.max_epochs not in (None, -1) else ""
        ckpt, best = trainer.checkpoint_callback, ""
        if ckpt is not None and ckpt.best_model_score is not None:
            best = f"  (best {ckpt.monitor} {float(ckpt.best_model_score):.4g})"
        seconds = time.perf_counter() - self._started
        took = f"{seconds:.1f} s" if seconds >= 1 else f"{1000 * seconds:.0f} ms"
        print(f"epoch {epoch}{total}  {shown}{best}  {took}", flush=True)
