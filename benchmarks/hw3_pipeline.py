"""HW3 data pipeline speed: FoodDataModule's decode-once uint8 cache vs the sample code's pipeline.

Writes food-11-sized JPEGs (512x384, photo-like detail) in the ML2023 layout, then times whole
epochs of ready training batches (augmented, normalized float) from each pipeline, with no model:
- sample-style: PIL open + Resize((128, 128)) + the augmentation in `__getitem__`, every epoch;
- cached: FoodDataModule (decoded once, at 128 px, into RAM; the same augmentation on uint8 tensors).
Same augmentation, batch size, worker count and torch threads; epochs interleaved so a busy
machine slows both alike. Epoch 1 of the cached pipeline includes decoding.

    python benchmarks/hw3_pipeline.py [--images 2000] [--epochs 3] [--workers N] [--augment strong|default]
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.base import available_cpus
from datamodules.food import MEAN, STD, FoodDataModule, default_num_workers
from datamodules.food_images import augmentation

AUGMENT = {  # per-image settings of homework/configs/hw3.yaml and hw3_strong.yaml
    "default": dict(crop_scale=(0.5, 1.0), hflip=0.5, auto_augment=None, random_erasing=0.0),
    "strong": dict(crop_scale=(0.25, 1.0), hflip=0.5, auto_augment="trivial", random_erasing=0.25),
}


def write_photos(folder: Path, count: int, seed: int = 0) -> float:
    """`count` 512x384 JPEGs with photo-like detail (shapes, texture, grain); returns the mean file size.

    Tuned to ~65 KiB per file, food-11's average (its 16643 JPEGs take about 1.1 GB).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(count):
        shapes, texture = (Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                           .resize((512, 384), Image.BICUBIC) for h, w in ((12, 16), (96, 128)))
        pixels = (np.asarray(shapes, dtype=np.float32) + (np.asarray(texture, dtype=np.float32) - 128) * 0.3
                  + rng.normal(0, 3, (384, 512, 1)))
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        path = folder / f"{i % 11}_{i // 11}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        sizes.append(path.stat().st_size)
    return float(np.mean(sizes))


class SampleStyleImages(Dataset):
    """The official sample's FoodDataset: open and transform the JPEG in every `__getitem__`."""

    def __init__(self, files: list[Path], transform: v2.Transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        image = Image.open(self.files[i])
        return self.transform(image), int(self.files[i].name.split("_")[0])


def sample_style_transform(image_size: int, settings: dict) -> v2.Compose:
    """Resize on the PIL image, then the same augmentation, then float + normalize (+ erasing, tensor-only)."""
    per_image = augmentation(image_size, **{**settings, "random_erasing": 0.0})
    erase = [v2.RandomErasing(settings["random_erasing"])] if settings["random_erasing"] else []
    return v2.Compose([v2.Resize((image_size, image_size)), per_image, v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD), *erase])


def timed_epoch(loader: DataLoader, finish=lambda batch: batch) -> tuple[float, int]:
    start, count = time.perf_counter(), 0
    for batch in loader:
        images, _ = finish(batch)
        count += len(images)
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="training images to generate")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_num_workers(), help="DataLoader workers (both)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--augment", choices=AUGMENT, default="strong")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the JPEGs (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, available_cpus() - args.workers))  # as the CLI does when training on the CPU
    root = args.dir or Path(tempfile.mkdtemp(prefix="hw3_pipeline_"))
    try:
        start = time.perf_counter()
        mean_size = write_photos(root / "train", args.images)
        write_photos(root / "valid", 11, seed=1)
        write_photos(root / "test", 11, seed=2)
        print(f"{args.images} JPEGs of 512x384 ({mean_size / 1024:.0f} KiB each) written in "
              f"{time.perf_counter() - start:.0f}s to {root}; {args.workers} worker(s), batch {args.batch_size}, "
              f"{args.image_size} px, '{args.augment}' augmentation, {torch.get_num_threads()} torch thread(s)")

        settings = AUGMENT[args.augment]
        files = sorted((root / "train").glob("*.jpg"))
        sample = DataLoader(SampleStyleImages(files, sample_style_transform(args.image_size, settings)),
                            batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                            persistent_workers=args.workers > 0, pin_memory=torch.cuda.is_available())
        dm = FoodDataModule(str(root), image_size=args.image_size, batch_size=args.batch_size,
                            num_workers=args.workers, **settings)
        cached = None
        rates: dict[str, list[float]] = {"sample-style": [], "cached": []}
        seconds: dict[str, list[float]] = {"sample-style": [], "cached": []}
        for epoch in range(args.epochs):
            took, count = timed_epoch(sample)
            rates["sample-style"].append(count / took)
            seconds["sample-style"].append(took)
            start = time.perf_counter()
            if cached is None:  # epoch 1 pays for decoding into the cache
                dm.setup("fit")
                cached = dm.train_dataloader()
            took, count = timed_epoch(cached, lambda batch: dm.prepare_batch(batch, train=True))
            took = time.perf_counter() - start
            rates["cached"].append(count / took)
            seconds["cached"].append(took)
            print(f"epoch {epoch + 1}: sample-style {rates['sample-style'][-1]:7.0f} img/s "
                  f"({seconds['sample-style'][-1]:5.1f}s)   cached {rates['cached'][-1]:7.0f} img/s "
                  f"({seconds['cached'][-1]:5.1f}s)", flush=True)

        later = slice(1, None) if args.epochs > 1 else slice(None)
        sample_rate, cached_rate = (float(np.mean(rates[k][later])) for k in ("sample-style", "cached"))
        cache_bytes = dm.train.images.nbytes + dm.valid.images.nbytes
        per_image = cache_bytes / (len(dm.train.files) + len(dm.valid.files))
        print(f"\nfrom epoch {2 if args.epochs > 1 else 1} on: sample-style {sample_rate:.0f} img/s, "
              f"cached {cached_rate:.0f} img/s -> {cached_rate / sample_rate:.1f}x")
        print(f"cache: {cache_bytes / 2**20:.0f} MiB in RAM ({per_image / 1024:.0f} KiB per image at "
              f"{args.image_size} px; food-11's 9866+3430 ML2022 train+valid images: "
              f"{per_image * 13296 / 2**20:.0f} MiB)")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
