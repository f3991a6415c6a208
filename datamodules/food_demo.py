"""HW3's demo set: a small food-11-shaped set of tinted digits (scikit-learn's `load_digits`), in the ML2022
layout and naming, what `fit` trains on before the course's photos are there."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_demo_food(directory: Path, per_class: tuple[int, int, int] = (110, 30, 30), seed: int = 0,
                    root: str = "food11", splits: tuple[str, str, str] = ("training", "validation", "test"),
                    first_id: int = 1) -> None:
    """A small food-11-shaped set from scikit-learn's 8x8 `load_digits`, in the ML2022 layout and naming
    (another homework on food-11 names its own folder `root`, its `splits` and its test files' `first_id`).

    Classes 0-9 are the digits; class 10 (digits have only ten) is a "2x2 plate" of four small
    digits, so the demo keeps food-11's 11 classes. Each image is a 64x48 RGB JPEG: dark ink on
    a light background, both randomly tinted, the digit at a random size, near the middle.
    """
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    pools: dict[str, list[tuple[int, list[np.ndarray]]]] = {name: [] for name in splits}
    for digit in range(10):
        index = rng.permutation(np.flatnonzero(digits.target == digit))
        start = 0
        for name, count in zip(pools, per_class):
            pools[name] += [(digit, [digits.images[i]]) for i in index[start:start + count]]
            start += count
    folder = directory / root
    for name, count in zip(pools, per_class):
        pool = pools[name]
        plates = [(10, [pool[j][1][0] for j in rng.choice(len(pool), 4, replace=False)]) for _ in range(count)]
        samples = [pool[i] for i in rng.permutation(len(pool))] + plates
        (folder / name).mkdir(parents=True, exist_ok=True)
        counters = [0] * 11
        for n, (label, glyphs) in enumerate(samples):
            file = f"{n + first_id:04d}.jpg" if name == splits[2] else f"{label}_{counters[label]}.jpg"
            counters[label] += 1
            render_digits(glyphs, rng).save(folder / name / file, quality=90)


def render_digits(glyphs: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    """One 8x8 digit (values 0-16), or four tiled 2x2, upsampled onto a 64x48 picture."""
    single = len(glyphs) == 1
    size = int(rng.integers(36, 47)) if single else 24
    extent = size if single else 2 * size
    x0 = int(np.clip((64 - extent) // 2 + rng.integers(-8, 9), 0, 64 - extent))  # near the middle, as a
    y0 = int(np.clip((48 - extent) // 2 + rng.integers(-4, 5), 0, 48 - extent))  # photo's subject usually is
    ink = np.zeros((48, 64), dtype=np.float32)
    for k, glyph in enumerate(glyphs):
        x, y = x0 + size * (k % 2), y0 + size * (k // 2)
        patch = Image.fromarray((glyph * 255 / 16).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        ink[y:y + size, x:x + size] = np.asarray(patch, dtype=np.float32) / 255
    background, foreground = rng.integers(170, 256, 3), rng.integers(0, 90, 3)
    pixels = background + ink[..., None] * (foreground - background) + rng.normal(0, 8, (48, 64, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
