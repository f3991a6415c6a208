"""HW8: what each run's best checkpoint sees, kind by kind, and how its validation proxy compares with the demo test
set's answer key.

For each run directory: the best checkpoint's ROC AUC on the default validation set (`val_auroc`), on each of
the six generated anomaly kinds against the normal validation faces (`kind_auroc/<kind>`, from a validation set
of all six, `blend` included), and on the demo test set
(`demo_test_labels.npy`, which only the demo set has: Kaggle keeps the real one), then the PCA reference
(`FacesDataModule.reference_score`) on the same validation set.

    python benchmarks/hw8_kinds.py runs/hw8/<run> [runs/hw8/<run> ...] [--data DIR] [--pca-samples 2000]
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from datamodules.faces import FacesDataModule, to_float
from datamodules.faces_anomalies import KINDS
from datamodules.faces_demo import LABELS_FILE
from homework.runs import run_checkpoint
from models.anomaly import AnomalyDetector


def scores_of(model: AnomalyDetector, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(to_float(images[i:i + batch])) for i in range(0, len(images), batch)]).numpy()


def validation(dm: FacesDataModule) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The whole validation set: images (uint8), labels and kinds."""
    blocks = list(dm.validation_set)
    return (torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks]).numpy(),
            torch.cat([b[2] for b in blocks]).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", default=None, help="the data folder (default: the demo set's)")
    parser.add_argument("--pca-samples", type=int, default=2000)
    options = parser.parse_args()
    torch.set_num_threads(1)
    dm = FacesDataModule(options.data)
    dm.setup("fit")
    images, labels, _ = validation(dm)
    every = FacesDataModule(options.data, val_anomalies=list(KINDS))
    every.setup("fit")
    every_images, every_labels, kinds = validation(every)
    test_labels = dm.data_dir / LABELS_FILE
    test = torch.from_numpy(np.asarray(dm.test_images.array)) if test_labels.is_file() else None
    header = ["run", "net", "val_auroc", *every.val_anomalies] + (["demo test"] if test is not None else [])
    print(" | ".join(header))
    for run in options.runs:
        model = AnomalyDetector.load_from_checkpoint(run_checkpoint(run).path, map_location="cpu").eval()
        row = [run.name, model.hparams.net, f"{roc_auc_score(labels, scores_of(model, images)):.4f}"]
        scores = scores_of(model, every_images)
        for k in range(len(every.val_anomalies)):
            chosen = (kinds == -1) | (kinds == k)
            row.append(f"{roc_auc_score(every_labels[chosen], scores[chosen]):.4f}")
        if test is not None:
            row.append(f"{roc_auc_score(np.load(test_labels), scores_of(model, test)):.4f}")
        print(" | ".join(row))
    reference = dm.reference_score(options.pca_samples)
    print(f"{reference.model}: {reference.monitor} {reference.score:.4f}")


if __name__ == "__main__":
    main()
