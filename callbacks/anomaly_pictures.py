"""Pictures of an anomaly detector (HW8), saved in the run directory:

- after `fit`, `reconstructions.png`: validation images, normal and generated anomalies of each kind, above
  what the best epoch's model reconstructs of them, with their scores;
- after `predict`, `anomalies.png`: the most and the least anomalous test images, with their scores as written
  to the submission, above their reconstructions.

The model gives `score(x) -> (scores, reconstructions)` and its `validation_step` returns them; the DataModule
gives `denormalize`, the test images (`test_rows(indices)`) and the names of its anomaly kinds.
"""

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from callbacks.plots import pyplot
from callbacks.submission import KaggleSubmissionWriter
from datamodules import outputs


class AnomalyPictures(pl.Callback):
    """Draws `reconstructions.png` at the end of fit and `anomalies.png` at the end of predict.

    Args:
        per_row: Images per row of each picture.
    """

    def __init__(self, per_row: int = 8) -> None:
        self.per_row = per_row
        self.best: dict | None = None
        self.current: dict | None = None

    # --- fit: the validation images of the best epoch ---------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.current = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or batch_idx != 0 or not isinstance(outputs, dict):
            return
        images, labels, kinds = batch
        chosen = (labels == 0).nonzero().flatten()[:self.per_row].tolist()  # normal images first
        names = list(getattr(trainer.datamodule, "val_anomalies", []))
        for k in range(len(names)):  # then one anomaly of each kind, a row's worth in all
            chosen += (kinds == k).nonzero().flatten()[:max(1, self.per_row // max(1, len(names)))].tolist()
        chosen = torch.tensor(chosen[:2 * self.per_row], device=images.device)
        captions = ["normal" if kinds[i] < 0 else names[int(kinds[i])] for i in chosen.tolist()]
        self.current = {"images": images[chosen].cpu(), "recon": outputs["reconstructions"][chosen].cpu(),
                        "scores": outputs["scores"][chosen].float().cpu(), "captions": captions}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.current is None:
            return
        score = trainer.callback_metrics.get(pl_module.monitor)
        if score is None:
            return
        better = self.best is None or (float(score) > self.best["score"] if pl_module.mode == "max"
                                       else float(score) < self.best["score"])
        if better:
            self.best = {**self.current, "score": float(score), "epoch": trainer.current_epoch}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.best is None:
            return
        best, denormalize = self.best, trainer.datamodule.denormalize
        chosen = Path(trainer.default_root_dir) / "reconstructions.png"
        captions = [f"{c}\n{s:.3g}" for c, s in zip(best["captions"], best["scores"].tolist())]
        path = plot_pairs(denormalize(best["images"]), denormalize(best["recon"]), captions, chosen,
                          f"Validation images (top) and reconstructions (below), anomaly score under each\n"
                          f"best epoch {best['epoch']}, {pl_module.monitor} {best['score']:.4f}", self.per_row,
                          str(chosen.parent.resolve()))
        rank_zero_info(f"Validation reconstructions: {path}{outputs.kept(chosen, path)}")
        if isinstance(trainer.logger, WandbLogger):
            trainer.logger.log_image(key="reconstructions", images=[str(path)])

    # --- predict: the test images at both ends of the ranking ---------------------------------------------
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        writer = next((c for c in trainer.callbacks if isinstance(c, KaggleSubmissionWriter)), None)
        if writer is None or writer.written_path is None:  # (k-fold averaging holds its predictions back)
            return
        import pandas as pd

        frame = pd.read_csv(writer.written_path)  # the scores as submitted, from every process
        scores = frame["score"].to_numpy()
        order = np.argsort(-scores, kind="stable")
        count = min(self.per_row, len(order) // 2) or len(order)
        ends = {"most anomalous": order[:count], "least anomalous": order[::-1][:count]}
        datamodule = trainer.datamodule
        rows, captions = [], []
        for what, indices in ends.items():
            rows.append(datamodule.test_rows(indices))
            captions += [f"{what.split()[0]} #{frame['ID'].iloc[i]}\n{scores[i]:.3g}" for i in indices]
        images = torch.cat(rows)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            recon = pl_module.score(images.to(pl_module.device))[1].cpu()
        pl_module.train(was_training)
        # beside the submission, which may be a folder of the user's (--submission.output_dir): by the output rule
        chosen = writer.written_path.parent / "anomalies.png"
        path = plot_pairs(datamodule.denormalize(images), datamodule.denormalize(recon), captions, chosen,
                          f"The {count} most (first row) and least (third row) anomalous of {len(scores)} test images, "
                          f"their scores,\nand their reconstructions (below each row)", count,
                          str(writer.written_path.resolve()))
        writer.summary = ((writer.summary or "") + f"\nPictures of the most and least anomalous test images: {path}"
                          + outputs.kept(chosen, path))


def plot_pairs(images: torch.Tensor, recon: torch.Tensor, captions: list[str], path: Path, title: str,
               per_row: int, inputs: str = "") -> Path:
    """Rows of (3, H, W) images in [0, 1], each row followed by a row of their reconstructions; saved by the output
    rule (datamodules/outputs.py), made from `inputs`: returns where it went."""
    plt = pyplot()
    groups = -(-len(images) // per_row)
    fig, axes = plt.subplots(2 * groups, per_row, figsize=(1.45 * per_row, 3.2 * groups + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(len(images)):
        row, col = 2 * (k // per_row), k % per_row
        axes[row][col].imshow(images[k].permute(1, 2, 0).numpy())
        axes[row][col].set_title(captions[k], fontsize=7)
        axes[row + 1][col].imshow(recon[k].permute(1, 2, 0).numpy())
        if col == 0:
            axes[row + 1][col].set_title("reconstruction", fontsize=7, color="dimgray")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = outputs.save_figure(fig, path, inputs, dpi=110)
    plt.close(fig)
    return path
