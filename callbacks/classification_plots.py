"""Pictures of a classifier's mistakes: the validation confusion matrix and the misclassified images."""

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from callbacks.plots import RunPictures, pyplot
from datamodules import outputs

class ClassificationPlots(RunPictures):
    """At the end of fit, draws the best epoch's validation confusion matrix and misclassified images.

    Collected while validating (the model's `validation_step` returns `{"preds": ...}`), so no
    extra pass; "best" is the epoch that improved the model's `monitor` last, i.e. the best
    checkpoint. Saved as PNGs in the run directory, logged to W&B, and the per-class accuracy printed.
    """

    def __init__(self, max_images: int = 32, confusion_filename: str = "confusion_matrix.png",
                 errors_filename: str = "misclassified.png") -> None:
        self.max_images = max_images
        self.confusion_filename, self.errors_filename = confusion_filename, errors_filename
        self.best: dict | None = None

    DEFAULT_NAMES = {"confusion_filename": "confusion_matrix.png", "errors_filename": "misclassified.png"}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.confusion = MulticlassConfusionMatrix(pl_module.hparams.num_classes)
        self.best = None

    def targets(self, root: Path) -> dict[str, Path]:
        return {name: root / getattr(self, name) for name in self.DEFAULT_NAMES}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != "fit":  # `validate` / `test` runs draw nothing
            return
        self.confusion.reset()
        self.wrong: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        x, y = batch
        preds = outputs["preds"].cpu()
        y = y.cpu()
        self.confusion.update(preds, y)
        room = self.max_images - sum(len(w[0]) for w in self.wrong)
        wrong = (preds != y).nonzero().flatten()[:room]
        if len(wrong):
            self.wrong.append((x[wrong.to(x.device)].cpu(), y[wrong], preds[wrong]))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        score = trainer.callback_metrics.get(pl_module.monitor)
        if score is None:
            return
        score = float(score)
        if self.best is None or (score > self.best["score"] if pl_module.mode == "max" else score < self.best["score"]):
            self.best = {"score": score, "epoch": trainer.current_epoch,  # from 0, as checkpoint names
                         "confusion": self.confusion.compute().numpy(), "wrong": self.wrong}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.best is None:
            return
        datamodule = trainer.datamodule
        num_classes = pl_module.hparams.num_classes
        names = [str(n) for n in getattr(datamodule, "class_names", range(num_classes))]
        confusion = self.best["confusion"]
        rank_zero_info(f"Per-class validation accuracy (epoch {self.best['epoch']}, "
                       f"{pl_module.monitor} {self.best['score']:.4f}):\n" + per_class_accuracy(confusion, names))
        root = Path(trainer.default_root_dir)
        run = str(root.resolve())  # the inputs: this run
        title = f"epoch {self.best['epoch']}, {pl_module.monitor} {self.best['score']:.4f}"
        chosen = self.targets(root)
        paths = {"confusion_matrix": plot_confusion(confusion, names, chosen["confusion_filename"],
                                                    f"Validation confusion matrix ({title})", run,
                                                    self.option("confusion_filename"))}
        denormalize = getattr(datamodule, "denormalize", lambda x: (x - x.min()) / (x.max() - x.min() + 1e-8))
        wrong = self.best["wrong"]
        images = denormalize(torch.cat([w[0] for w in wrong])) if wrong else torch.empty(0)
        labels = [(names[t], names[p]) for w in wrong for t, p in zip(w[1].tolist(), w[2].tolist())]
        paths["misclassified"] = plot_misclassified(images, labels, chosen["errors_filename"],
                                                    f"Misclassified validation images ({title})", run,
                                                    self.option("errors_filename"))
        rank_zero_info(f"Validation pictures: {paths['confusion_matrix']}, {paths['misclassified']}"
                       + outputs.kept(chosen["confusion_filename"], paths["confusion_matrix"])
                       + outputs.kept(chosen["errors_filename"], paths["misclassified"]))
        if isinstance(trainer.logger, WandbLogger):
            for key, path in paths.items():
                trainer.logger.log_image(key=key, images=[str(path)])


def plot_confusion(confusion: np.ndarray, names: list[str], path: Path, title: str, inputs: str = "",
                   option: str | None = None) -> Path:
    """Cells coloured by the share of each true class (row), labelled with counts; accuracy per class on the rows.
    Saved by the output rule (datamodules/outputs.py): returns where it went.

    Hand-drawn: sklearn's and torchmetrics' displays colour by count or print shares, not both.
    """
    plt = pyplot()
    n = len(names)
    rates = confusion / confusion.sum(1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(2.6 + 0.62 * n, 1.8 + 0.55 * n))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i, j in zip(*np.nonzero(confusion)):
        ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(n), [f"{name}  {rates[i, i]:.0%}" for i, name in enumerate(names)], fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class  (its accuracy)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = outputs.save_figure(fig, path, inputs, option, dpi=110)
    plt.close(fig)
    return path


def plot_misclassified(images: torch.Tensor, labels: list[tuple[str, str]], path: Path, title: str,
                       inputs: str = "", option: str | None = None, columns: int = 8) -> Path:
    """A grid of (3, H, W) images in [0, 1], each captioned with its true and predicted class (saved as
    `plot_confusion` saves)."""
    plt = pyplot()
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.0 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k].permute(1, 2, 0).numpy())
            true, pred = labels[k]
            ax.set_title(f"true: {true}\npred: {pred}", fontsize=7, color="firebrick")
    if not len(images):
        axes[0][0].text(0, 0.5, "no misclassified validation images", fontsize=11)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = outputs.save_figure(fig, path, inputs, option, dpi=110)
    plt.close(fig)
    return path


def per_class_accuracy(confusion, names: list[str]) -> str:
    """A line per class: its accuracy and how many validation images it had (a class with none has no
    accuracy, not 0%: a small or limited validation set may miss classes)."""
    lines = []
    for i, name in enumerate(names):
        count = int(confusion[i].sum())
        accuracy = f"{confusion[i, i] / count:6.1%}" if count else "     -"
        lines.append(f"  {name:<16} {accuracy}  ({count} image{'' if count == 1 else 's'})")
    return "\n".join(lines)
