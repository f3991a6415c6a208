"""Pictures people would rather look at than read: the learning curve of every fit."""

import logging
from collections import defaultdict
from pathlib import Path

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class LearningCurvePlot(pl.Callback):
    """Saves `learning_curve.png` (train vs validation loss, plus other validation metrics) in the run dir.

    Train and validation loss side by side is the course's tool for telling model bias,
    optimization trouble and overfitting apart, so every fit draws it. Logged to W&B too.
    """

    def __init__(self, filename: str = "learning_curve.png") -> None:
        self.filename = filename
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, value in trainer.callback_metrics.items():
            if value.numel() == 1 and (name.startswith("train_") or name.startswith("val_")) and not name.endswith("_step"):
                self.history[name.removesuffix("_epoch")].append((trainer.current_epoch + 1, float(value)))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        path = Path(trainer.default_root_dir) / self.filename
        self.plot(path, getattr(pl_module, "monitor", None))
        log.info("Learning curve: %s", path)
        logger = trainer.logger
        if logger is not None and hasattr(logger, "log_image"):
            logger.log_image(key="learning_curve", images=[str(path)])

    def plot(self, path: Path, monitor: str | None = None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        losses = sorted(k for k in self.history if k.endswith("loss"))
        others = sorted(k for k in self.history if k.startswith("val_") and k not in losses)
        panels = [losses] + ([others] if others else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
        for ax, names in zip(axes[0], panels):
            for name in names:
                epochs, values = zip(*self.history[name])
                ax.plot(epochs, values, label=name, linewidth=1.6 if name == monitor else 1.1)
                if name == monitor:
                    best = min(values) if "loss" in name or "mse" in name or "err" in name else max(values)
                    ax.axhline(best, color="grey", linestyle=":", linewidth=1)
                    ax.annotate(f"best {best:.4g}", xy=(epochs[0], best), fontsize=8, color="grey",
                                xytext=(0, 3), textcoords="offset points")
            positive = all(v > 0 for n in names for _, v in self.history[n])
            if names is losses and positive:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend()
        axes[0][0].set_title("loss (train vs validation)")
        if others:
            axes[0][1].set_title("validation metrics")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
