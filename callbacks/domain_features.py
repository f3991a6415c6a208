"""The domain-adaptation lecture's picture: a t-SNE of source and target features, coloured by domain and by
class, early in training (before the adaptation has done much) and at its end."""

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import move_data_to_device, rank_zero_info

from callbacks.plots import RunPictures, pyplot
from datamodules import outputs

DEFAULT_NAME = "tsne.png"


class DomainFeaturesTSNE(RunPictures):
    """Saves `tsne.png` in the run directory at the end of fit: scikit-learn's t-SNE of the feature extractor's
    output on the validation photos and drawings (at most `max_points` of each), after the first epoch and
    after the last; left coloured by domain, right by class (the drawings' true class where labels were
    given, else their predicted class, which the legend says).

    Asks the model for `feature_extractor` and `label_predictor`, and the DataModule for its two validation
    loaders (source with labels, target with labels or -1) and `class_names`. The first snapshot is kept as
    its 2-D points in checkpoints, so a resumed run still draws both.
    """

    DEFAULT_NAMES = {"filename": DEFAULT_NAME}

    def __init__(self, max_points: int = 300, filename: str = DEFAULT_NAME, perplexity: float = 30.0) -> None:
        self.max_points, self.filename, self.perplexity = max_points, filename, perplexity
        self.snapshots: dict[str, dict] = {}

    @torch.no_grad()
    def features(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        """Features, domains (1: source), classes and whether each class is a true label, as numpy arrays."""
        datamodule, was_training = trainer.datamodule, pl_module.training
        pl_module.eval()
        out = {"features": [], "domain": [], "label": [], "true": []}
        for domain, loader in zip((1, 0), datamodule.val_dataloader()):
            taken = 0
            for batch in loader:
                if taken >= self.max_points:
                    break
                images, labels = datamodule.on_after_batch_transfer(move_data_to_device(batch, pl_module.device), 0)
                images, labels = images[:self.max_points - taken], labels[:self.max_points - taken]
                features = pl_module.feature_extractor(images)
                predicted = pl_module.label_predictor(features).argmax(-1)
                out["features"].append(features.float().cpu())
                out["label"].append(torch.where(labels >= 0, labels, predicted).cpu())
                out["true"].append((labels >= 0).cpu())
                out["domain"].append(torch.full((len(images),), domain))
                taken += len(images)
        pl_module.train(was_training)
        return {key: torch.cat(values).numpy() for key, values in out.items()}

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str) -> dict:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        data = self.features(trainer, pl_module)
        perplexity = min(self.perplexity, (len(data["features"]) - 1) / 3)
        # as many threads as torch's (homework/cli/hardware.py): on a busy 2-core machine, OpenMP threads
        # spin-waiting on each other made this t-SNE take 74 s instead of 7 s
        with threadpool_limits(torch.get_num_threads()):
            points = TSNE(n_components=2, init="pca", random_state=5, perplexity=perplexity).fit_transform(
                data["features"])
        lamb = getattr(pl_module, "current_lambda", lambda: None)()
        done = trainer.current_epoch if when == "early" else trainer.current_epoch - 1  # (counted from 0)
        title = f"{when}: after epoch {done}" + (f", lambda {lamb:.2f}" if lamb is not None else "")
        return {"points": points, "domain": data["domain"], "label": data["label"], "true": data["true"],
                "title": title}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0 and trainer.is_global_zero and "early" not in self.snapshots:
            self.snapshots["early"] = self.snapshot(trainer, pl_module, "early")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.current_epoch == 0 and "early" not in self.snapshots:
            return
        self.snapshots["last"] = self.snapshot(trainer, pl_module, "last")
        names = [str(n) for n in getattr(trainer.datamodule, "class_names", range(pl_module.hparams.num_classes))]
        chosen = Path(trainer.default_root_dir) / self.filename
        path = plot_tsne([self.snapshots[k] for k in ("early", "last") if k in self.snapshots], names, chosen,
                         str(chosen.parent.resolve()), self.option())
        rank_zero_info(f"t-SNE of the features, before and after adaptation: {path}{outputs.kept(chosen, path)}")
        if isinstance(trainer.logger, WandbLogger):
            trainer.logger.log_image(key="tsne", images=[str(path)])

    def state_dict(self) -> dict:
        """The early snapshot as tensors and text (a checkpoint loads with torch.load(weights_only=True))."""
        if "early" not in self.snapshots:
            return {}
        return {"early": {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                          for k, v in self.snapshots["early"].items()}}

    def load_state_dict(self, state: dict) -> None:
        self.snapshots = {name: {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in snap.items()}
                          for name, snap in state.items()}


def plot_tsne(snapshots: list[dict], class_names: list[str], path: Path, inputs: str = "",
              option: str | None = None) -> Path:
    """One row per snapshot: the points coloured by domain (left) and by class (right; photos as dots,
    drawings as crosses). Saved by the output rule (datamodules/outputs.py): returns where it went."""
    plt = pyplot()
    fig, axes = plt.subplots(len(snapshots), 2, figsize=(11.5, 4.6 * len(snapshots)), squeeze=False)
    domain_colors = {1: ("tab:blue", "source (photos)"), 0: ("tab:orange", "target (drawings)")}
    colors = plt.get_cmap("tab10").colors
    for row, snap in zip(axes, snapshots):
        points, domain, label = snap["points"], snap["domain"], snap["label"]
        for value, (color, name) in domain_colors.items():
            mask = domain == value
            row[0].scatter(points[mask, 0], points[mask, 1], s=7, color=color, alpha=0.6, label=name)
        for c, name in enumerate(class_names):
            for value, marker in ((1, "o"), (0, "x")):
                mask = (label == c) & (domain == value)
                row[1].scatter(points[mask, 0], points[mask, 1], s=9 if value else 12, marker=marker,
                               color=colors[c % 10], alpha=0.7, linewidths=0.8,
                               label=name if value == 1 else None)
        target_truth = "true classes" if snap["true"][domain == 0].all() else "predicted classes"
        row[0].set_title(f"{snap['title']} - by domain", fontsize=10)
        row[1].set_title(f"{snap['title']} - by class (photos o, drawings x: {target_truth})", fontsize=10)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
        row[0].legend(loc="best", fontsize=8, markerscale=2)
    axes[0][1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2, frameon=False)
    fig.suptitle("Features of the feature extractor (t-SNE): aligned domains overlap; classes should stay apart",
                 fontsize=11)
    fig.tight_layout()
    path = outputs.save_figure(fig, path, inputs, option, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
