"""Pictures people would rather look at than read: the learning curve of every fit."""

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

log = logging.getLogger(__name__)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend: runs draw PNGs, on machines with or without a screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class LearningCurvePlot(pl.Callback):
    """Saves `learning_curve.png` (train vs validation loss, plus other validation metrics) in the run dir.

    Train and validation loss side by side is the course's tool for telling model bias,
    optimization trouble and overfitting apart, so every fit draws it. Logged to W&B too.
    """

    def __init__(self, filename: str = "learning_curve.png") -> None:
        self.filename = filename
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.recorded_epochs = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)

    def _record(self, trainer: pl.Trainer) -> None:
        """Note the epoch that just ended: only now are both its train and validation metrics final.
        Epochs count from 0, as in Lightning's progress bar and the checkpoint names."""
        completed = trainer.current_epoch
        if completed <= self.recorded_epochs:
            return
        self.recorded_epochs = completed
        for name, value in trainer.callback_metrics.items():
            if value.numel() == 1 and (name.startswith("train_") or name.startswith("val_")) and not name.endswith("_step"):
                self.history[name.removesuffix("_epoch")].append((completed - 1, float(value)))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        path = Path(trainer.default_root_dir) / self.filename
        self.plot(path, getattr(pl_module, "monitor", None), getattr(pl_module, "mode", "min"))
        log.info("Learning curve: %s", path)
        logger = trainer.logger
        if logger is not None and hasattr(logger, "log_image"):
            logger.log_image(key="learning_curve", images=[str(path)])

    def plot(self, path: Path, monitor: str | None = None, mode: str = "min") -> None:
        from matplotlib.ticker import MaxNLocator

        plt = pyplot()

        losses = sorted(k for k in self.history if k.endswith("loss"))
        others = sorted(k for k in self.history if k.startswith("val_") and k not in losses)
        panels = [losses] + ([others] if others else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.4), squeeze=False)
        for ax, names in zip(axes[0], panels):
            for name in names:
                epochs, values = zip(*self.history[name])
                line, = ax.plot(epochs, values, label=name, linewidth=1.8 if name == monitor else 1.1)
                if name == monitor:
                    lower_is_better = mode == "min"
                    best = int(np.argmin(values) if lower_is_better else np.argmax(values))
                    ax.plot(epochs[best], values[best], "o", color=line.get_color())
                    ax.annotate(f"best {values[best]:.4g} @ epoch {epochs[best]}", (epochs[best], values[best]),
                                xytext=(0, 8 if lower_is_better else -16), textcoords="offset points", fontsize=9,
                                ha="right" if epochs[best] > (epochs[0] + epochs[-1]) / 2 else "left")
            values = [v for n in names for _, v in self.history[n]]
            if min(values) > 0 and max(values) / min(values) > 20:  # early epochs would flatten the rest
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        axes[0][0].set_title("loss: train vs validation")
        if others:
            axes[0][1].set_title("validation metrics")
        fig.text(0.5, 0.005, "both high: model bias or optimization trouble · train low, validation high: overfitting",
                 ha="center", va="bottom", fontsize=8.5, color="dimgray")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
