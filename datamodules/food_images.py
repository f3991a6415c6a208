"""HW3's images: each JPEG decoded once, at the training resolution, into a uint8 array (in RAM, or a memory-mapped
.npy for sets larger than RAM), and the dataset that augments those small tensors (torchvision v2). Apart from
the DataModule (food.py), which finds the files, builds the cache from these and makes the loaders.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2


def load_image(path: Path, size: int, crop: float | None = None) -> torch.Tensor:
    """Decode to a (3, size, size) uint8 tensor: squashed to a square as HW3's sample's Resize((128, 128)), or
    with `crop` (a fraction) as Resize(size / crop) + CenterCrop(size), HW13's sample (Resize(256) +
    CenterCrop(224))."""
    with Image.open(path) as image:
        # JPEG only: decode straight at 1/2, 1/4 or 1/8 scale (DCT scaling), several times faster
        # than decoding the full 512x384 photo and then shrinking it.
        side = size if crop is None else round(size / crop)
        image.draft("RGB", (side, side))
        image = image.convert("RGB")
        if crop is None:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        else:  # the shorter side to size / crop, then the centre size x size
            scale = side / min(image.size)
            image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                                 Image.Resampling.BILINEAR)
            left, top = (image.width - size) // 2, (image.height - size) // 2
            image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


class DecodeFiles(Dataset):
    """Decodes image files; a broken file is reported back, not raised inside a worker."""

    def __init__(self, paths: list[Path], size: int, crop: float | None = None) -> None:
        self.paths, self.size, self.crop = paths, size, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, load_image(self.paths[i], self.size, self.crop), None
        except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
            return i, None, f"{type(err).__name__}: {err}"


class MappedImages:
    """A uint8 image array in a .npy file, opened lazily by each process that reads it.

    (A numpy memmap sent to a DataLoader worker would be pickled as a full in-RAM copy.)
    """

    def __init__(self, path: Path) -> None:
        self.path, self._array = path, None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[i]))

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def __getstate__(self) -> dict:
        return {"path": self.path, "_array": None}


Images = torch.Tensor | MappedImages


@dataclass
class Split:
    """One split's decoded images; `keep` leaves out the images that could not be decoded."""

    files: list[Path]
    images: Images
    labels: torch.Tensor | None
    keep: np.ndarray


class FoodImages(Dataset):
    """Cached images, augmented per sample; with `views` > 0 an item is the clean image plus that many views."""

    def __init__(self, split: Split, transform: v2.Transform | None = None, views: int = 0) -> None:
        self.split, self.transform, self.views = split, transform, views

    def __len__(self) -> int:
        return len(self.split.keep)

    def __getitem__(self, i: int):
        index = int(self.split.keep[i])
        image = self.split.images[index]
        if self.views:
            image = torch.stack([image, *(self.transform(image) for _ in range(self.views))])
        elif self.transform is not None:
            image = self.transform(image)
        return image if self.split.labels is None else (image, self.split.labels[index])


def augmentation(image_size: int, crop_scale: tuple[float, float] | None, hflip: float,
                 auto_augment: str | None, random_erasing: float) -> v2.Transform:
    """Per-image training augmentation on uint8 tensors (torchvision v2)."""
    ops: list[v2.Transform] = []
    if crop_scale is not None:
        ops.append(v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True))
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    policies = {"trivial": v2.TrivialAugmentWide, "auto": v2.AutoAugment, "rand": v2.RandAugment}
    if auto_augment is not None:
        ops.append(policies[auto_augment]())
    if random_erasing > 0:
        ops.append(v2.RandomErasing(random_erasing))
    return v2.Compose(ops) if ops else v2.Identity()
