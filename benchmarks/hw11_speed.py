"""HW11 training speed: steps per second of `hw11.py fit` (one forward and one backward through the gradient
reversal; photos decoded and Canny-filtered once) against the course sample's loop as written (ImageFolder
decoding and Canny-filtering every image every epoch; the domain classifier's step on detached features, then a
second forward of it and a second backward for the extractor and predictor), on the same images, networks
(the sample's at `--width`), batch size (32 + 32), augmentation and torch threads. Rounds alternate so a busy
machine slows both alike; each side's first steps (worker start, warm-up) are not timed.

    python benchmarks/hw11_speed.py [--data_dir DIR] [--width 64] [--steps 30] [--rounds 3] [--workers 1]
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.optim as optim

from datamodules.real_or_drawing import RealOrDrawingDataModule
from models.domain_adaptation import DomainAdversarialClassifier, DomainClassifier, FeatureExtractor, LabelPredictor

WARMUP = 3


def sample_loop(root: Path, width: int, steps: int, workers: int) -> float:
    """The sample's data pipeline and `train_epoch` (lambda 0.1), on the CPU; returns steps per second."""
    import cv2
    import torchvision.transforms as transforms
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    source_transform = transforms.Compose([
        transforms.Grayscale(), transforms.Lambda(lambda x: cv2.Canny(np.array(x), 170, 300)),
        transforms.ToPILImage(), transforms.RandomHorizontalFlip(), transforms.RandomRotation(15, fill=(0,)),
        transforms.ToTensor()])
    target_transform = transforms.Compose([
        transforms.Grayscale(), transforms.Resize((32, 32)), transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(15, fill=(0,)), transforms.ToTensor()])
    source_dataloader = DataLoader(ImageFolder(str(root / "train_data"), transform=source_transform),
                                   batch_size=32, shuffle=True, num_workers=workers)
    target_dataloader = DataLoader(ImageFolder(str(root / "test_data"), transform=target_transform),
                                   batch_size=32, shuffle=True, num_workers=workers)
    feature_extractor, label_predictor = FeatureExtractor(width), LabelPredictor(8 * width)
    domain_classifier = DomainClassifier(8 * width)
    class_criterion, domain_criterion = nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss()
    optimizer_F, optimizer_C = optim.Adam(feature_extractor.parameters()), optim.Adam(label_predictor.parameters())
    optimizer_D = optim.Adam(domain_classifier.parameters())
    lamb, done, start = 0.1, 0, None
    while done < steps + WARMUP:
        for (source_data, source_label), (target_data, _) in zip(source_dataloader, target_dataloader):
            if done == WARMUP:
                start = time.perf_counter()
            if done == steps + WARMUP:
                break
            mixed_data = torch.cat([source_data, target_data], dim=0)
            domain_label = torch.zeros(len(mixed_data))  # (1-D: this DomainClassifier returns one logit per row)
            domain_label[:source_data.shape[0]] = 1
            feature = feature_extractor(mixed_data)
            loss = domain_criterion(domain_classifier(feature.detach()), domain_label)
            loss.backward()
            optimizer_D.step()
            class_logits = label_predictor(feature[:source_data.shape[0]])
            domain_logits = domain_classifier(feature)
            loss = class_criterion(class_logits, source_label) - lamb * domain_criterion(domain_logits, domain_label)
            loss.backward()
            optimizer_F.step()
            optimizer_C.step()
            optimizer_D.zero_grad()
            optimizer_F.zero_grad()
            optimizer_C.zero_grad()
            done += 1
    return steps / (time.perf_counter() - start)


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.start, self.end, self.count = None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.count == WARMUP:
            self.start = time.perf_counter()
        self.count += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def lightning_loop(data_dir: Path, width: int, steps: int, workers: int) -> float:
    """The framework's DataModule and task (sample recipe: lambda 0.1 constant) in a bare Trainer."""
    dm = RealOrDrawingDataModule(str(data_dir), num_workers=workers, net_width=width)
    model = DomainAdversarialClassifier(width=width, lamb=0.1, lamb_schedule="constant")
    timer = StepTimer()
    trainer = pl.Trainer(max_steps=steps + WARMUP, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                         accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return steps / (timer.end - timer.start)  # (the first WARMUP steps, and decoding in setup, not timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="real_or_drawing's parent; default: the demo set")
    parser.add_argument("--width", type=int, default=64, help="the sample's 64; the demo's recipe uses 16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.data_dir is None:
        RealOrDrawingDataModule.ensure_demo(RealOrDrawingDataModule.demo_dir())
        data_dir = RealOrDrawingDataModule.demo_dir()
    else:
        data_dir = Path(args.data_dir)
    root = RealOrDrawingDataModule.locate(data_dir).root
    sample, ours = [], []
    for _ in range(args.rounds):
        sample.append(sample_loop(root, args.width, args.steps, args.workers))
        ours.append(lightning_loop(data_dir, args.width, args.steps, args.workers))
        print(f"steps/s: sample loop {sample[-1]:.2f}, hw11.py {ours[-1]:.2f}", flush=True)
    best_sample, best_ours = max(sample), max(ours)
    print(f"\nwidth {args.width}, 32 + 32 images a step, {args.steps} timed steps x {args.rounds} rounds, "
          f"{args.workers} loader worker(s) per domain, {args.threads} torch thread(s)")
    print(f"| sample loop | hw11.py | ratio |\n|---|---|---|\n| {best_sample:.2f} steps/s (runs: "
          f"{', '.join(f'{v:.2f}' for v in sample)}) | {best_ours:.2f} steps/s (runs: "
          f"{', '.join(f'{v:.2f}' for v in ours)}) | {best_ours / best_sample:.2f}x (median of runs "
          f"{statistics.median(ours) / statistics.median(sample):.2f}x) |")


if __name__ == "__main__":
    main()
