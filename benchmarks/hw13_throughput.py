"""HW13 training throughput: `hw13.py fit` (Lightning, HW3's decode-once cache, the teacher's logits without
gradients) against the course sample's loop (PIL Resize(256) + CenterCrop(224) + flip in every `__getitem__`, then
the same student's step, and with the teacher its forward pass under `no_grad`), with and without a teacher, in one
run, as ratios. The sample StudentNet and a ResNet-18 teacher (random weights: speed only) on food-11-sized JPEGs.

    python benchmarks/hw13_throughput.py [--images 256] [--epochs 2] [--image-size 224] [--workers N]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/...` from a checkout
from benchmarks.hw3_pipeline import SampleStyleImages, write_photos
from datamodules.base import available_cpus
from datamodules.compression import TEACHER_FILE, CompressionDataModule
from datamodules.food import MEAN, STD, default_num_workers
from models.distillation import Student
from models.students import StudentNet, kd_loss


def sample_loop(files, size: int, workers: int, epochs: int, teacher) -> list[float]:
    """The sample notebook's training loop: images per second of each epoch."""
    crop = v2.Compose([v2.Resize(round(size / 0.875)), v2.CenterCrop(size), v2.RandomHorizontalFlip(), v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    loader = DataLoader(SampleStyleImages(files, crop), batch_size=64, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    student = StudentNet(11, 2023)
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-4, weight_decay=1e-5)
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        student.train()
        for images, labels in loader:
            logits = student(images)
            if teacher is None:
                loss = F.cross_entropy(logits, labels)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(images)
                loss = kd_loss(logits, labels, teacher_logits, 0.5, 4.0)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), max_norm=10)
            optimizer.step()
            count += len(images)
        rates.append(count / (time.perf_counter() - start))
    return rates


class EpochTimes(pl.Callback):
    def __init__(self) -> None:
        self.rates, self.start = [], 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.rates.append(trainer.num_training_batches * trainer.datamodule.batch_size
                          / (time.perf_counter() - self.start))


def lightning_fit(root: Path, size: int, workers: int, epochs: int, loss: str) -> list[float]:
    """`hw13.py fit`'s model and data on the same files (no checkpoints or logs: the training itself)."""
    dm = CompressionDataModule(str(root), image_size=size, teacher_image_size=size, num_workers=workers,
                               crop_scale=None, hflip=0.5)
    model = Student(net="sample", image_size=size, loss_fn_type=loss, from_data=dm.from_data)
    timer = EpochTimes()
    trainer = pl.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                         gradient_clip_val=10)
    dm.setup("fit")  # decoded before timing (once per data set; the sample's loop decodes every epoch)
    trainer.fit(model, datamodule=dm)
    return timer.rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    args = parser.parse_args()
    torch.set_num_threads(max(1, available_cpus() - args.workers))  # as the CLI does when training on the CPU
    root = Path(tempfile.mkdtemp(prefix="hw13_throughput_"))
    write_photos(root / "training", args.images)
    write_photos(root / "validation", 11, seed=1)
    write_photos(root / "evaluation", 11, seed=2)
    teacher = torchvision.models.resnet18(weights=None, num_classes=11).eval()
    torch.save(teacher.state_dict(), root / TEACHER_FILE)
    files = sorted((root / "training").glob("*.jpg"))
    print(f"{args.images} JPEGs of 512x384, {args.image_size} px, {args.workers} worker(s), "
          f"{torch.get_num_threads()} torch thread(s); images/s of epochs 2.. (epoch 1 warms up)")
    later = slice(1, None) if args.epochs > 1 else slice(None)
    for label, loss, net in (("without a teacher (CE)", "CE", None), ("with the teacher (KD)", "KD", teacher)):
        sample = sample_loop(files, args.image_size, args.workers, args.epochs, net)
        ours = lightning_fit(root, args.image_size, args.workers, args.epochs, loss)
        s, o = (sum(r[later]) / len(r[later]) for r in (sample, ours))
        print(f"{label}: sample loop {s:.1f} img/s, hw13.py fit {o:.1f} img/s -> {o / s:.2f}x", flush=True)


if __name__ == "__main__":
    main()
