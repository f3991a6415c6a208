"""HW13's demo teacher: a torchvision ResNet-18 for 11 classes, as the course's, trained on the demo digits (32 px) by
the first fit that needs a teacher and saved beside them as `resnet18_teacher.ckpt`, a plain state dict like the
course's file, so the demo's distillation reads it with the same code as the real teacher.

A plain loop, not a Lightning run: it must not leave a run directory behind, and it runs inside the fit that asked
for it (a few minutes on a CPU, once; the fits after it reuse the file).
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from datamodules.atomic import build_once
from datamodules.food import MEAN, STD, list_images, parse_label
from datamodules.food_images import augmentation, load_image
import torchvision

#: The demo teacher's epochs and seed (its validation accuracy on the demo digits: docs/hw13.md).
EPOCHS, SEED = 16, 0


def load_split(folder: Path, size: int, crop: float) -> tuple[torch.Tensor, torch.Tensor]:
    files = list_images(folder)
    return (torch.stack([load_image(f, size, crop) for f in files]),
            torch.tensor([parse_label(f, False, 11) for f in files]))


def normalize(images: torch.Tensor) -> torch.Tensor:
    return v2.functional.normalize(v2.functional.to_dtype(images, torch.float32, scale=True), MEAN, STD)


def ensure_demo_teacher(target: Path, size: int, crop: float, epochs: int | None = None) -> None:
    """Train the demo teacher on the demo's training split (beside `target`) unless `target` holds it: once, under a
    lock (two fits started together: the second waits and reuses it)."""
    build_once(target, lambda tmp: train_demo_teacher(target.parent, size, crop, tmp, epochs),
               what="training the demo teacher")


def train_demo_teacher(root: Path, size: int, crop: float, target: Path, epochs: int | None = None) -> float:
    """Train it on `root`'s training split at `size` px (the demo's augmentation) for `epochs` (None: EPOCHS), save it
    to `target`; returns its validation accuracy."""
    epochs = epochs or EPOCHS
    start = time.perf_counter()
    rank_zero_info(f"Training the demo teacher once (ResNet-18, {epochs} epochs on the demo digits at {size} px) ...")
    rng = torch.get_rng_state()
    torch.manual_seed(SEED)
    try:
        train_x, train_y = load_split(root / "training", size, crop)
        val_x, val_y = load_split(root / "validation", size, crop)
        net = torchvision.models.resnet18(weights=None, num_classes=11)
        loader = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True, drop_last=len(train_x) > 64,
                            generator=torch.Generator().manual_seed(SEED))
        optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=epochs * len(loader))
        augment = augmentation(size, (0.5, 1.0), 0.5, None, 0.0)
        for _ in range(epochs):
            net.train()
            for images, labels in loader:
                loss = F.cross_entropy(net(normalize(torch.stack([augment(image) for image in images]))), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        net.eval()
        with torch.no_grad():
            accuracy = (net(normalize(val_x)).argmax(1) == val_y).float().mean().item()
    finally:
        torch.set_rng_state(rng)
    torch.save(net.state_dict(), target)
    rank_zero_info(f"  done in {time.perf_counter() - start:.0f} s: validation accuracy {accuracy:.3f} "
                   f"(resnet18_teacher.ckpt beside the demo images)")
    return accuracy
