"""HW11's demo set: ten shapes as "real photos" (filled, coloured, on textured backgrounds, 32x32 RGB) and as
"hand drawings" (wobbly white outlines on black, 28x28 grayscale), in the course's `real_or_drawing` layout,
with the drawings' labels beside them (`target_labels.csv`, which Kaggle would keep) so the demo can show
whether adaptation helped.

The gap is built to be one that training on the photos alone does not cross well, as on the real data: the
drawings are outlines (Canny turns a photo into outlines too, but also outlines its background clutter),
thinner or thicker, smaller and off-centre, with the hand's wobble.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: The demo's classes: shapes (the course's horse, bed, clock, ... cannot be drawn in a few lines of code).
DEMO_CLASSES = ("circle", "square", "triangle", "diamond", "star", "cross", "arrow", "heart", "crescent", "bolt")
SUPERSAMPLE = 4  # shapes are drawn 4x larger and shrunk, for smooth (anti-aliased) edges


def shape(name: str) -> np.ndarray:
    """The outline of a shape as (K, 2) points in [-1, 1] (a closed polygon)."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    if name == "circle":
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.85
    if name == "triangle":
        return np.array([[0, -1], [1, 0.8], [-1, 0.8]])
    if name == "diamond":
        return np.array([[0, -1], [0.75, 0], [0, 1], [-0.75, 0]])
    if name == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2, 0.42, 1.0)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    if name == "cross":
        a, b = 0.3, 1.0
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a],
                         [-b, -a], [-a, -a]])
    if name == "arrow":
        return np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]])
    if name == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x / 17, y / 17], 1)
    if name == "crescent":
        outer = np.linspace(-np.pi / 2, np.pi / 2, 20)
        inner = outer[::-1]
        return np.concatenate([np.stack([np.cos(outer), np.sin(outer)], 1),
                               np.stack([0.45 * np.cos(inner), np.sin(inner)], 1)]) - [0.2, 0]
    if name == "bolt":
        return np.array([[0.1, -1], [-0.6, 0.1], [-0.05, 0.1], [-0.3, 1], [0.6, -0.2], [0.05, -0.2], [0.35, -1]])
    raise ValueError(name)


def place(points: np.ndarray, size: int, scale: float, angle: float, shift: np.ndarray) -> list[tuple]:
    """The shape's points in pixels: scaled to `scale` of the image's half side, rotated, shifted."""
    c, s = np.cos(angle), np.sin(angle)
    rotated = points @ np.array([[c, s], [-s, c]])
    xy = (rotated * scale + shift + 1) * size / 2
    return [tuple(p) for p in xy]


def gray(rgb) -> float:
    """ITU-R 601 luma, as PIL's convert("L")."""
    return float(np.dot(rgb, (0.299, 0.587, 0.114)))


def photo(name: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A "real photo": the filled shape in one colour, big and centred, on a textured, coloured background."""
    background = rng.integers(0, 256, 3).astype(np.float32)
    pixels = np.ones((size, size, 3), np.float32) * background
    yy, xx = np.mgrid[0:size, 0:size]
    # texture: a few soft stripes of other colours (Canny outlines some of them: clutter)
    for _ in range(int(rng.integers(1, 4))):
        colour, angle, period = rng.integers(0, 256, 3), rng.uniform(0, np.pi), rng.uniform(0.3, 1.0) * size
        wave = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / period * 2 * np.pi)
        weight = rng.uniform(0.2, 0.6) * wave[..., None]
        pixels = pixels * (1 - weight) + colour * weight
    fill = rng.integers(0, 256, 3)
    while abs(gray(fill) - gray(pixels.mean((0, 1)))) < 70:  # the shape stands out in grayscale, as a photo's
        fill = rng.integers(0, 256, 3)                        # subject mostly does (else Canny sees nothing)
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(place(shape(name), big, rng.uniform(0.6, 0.85), rng.uniform(-0.3, 0.3),
                                       rng.uniform(-0.12, 0.12, 2)), fill=255)
    alpha = np.asarray(mask.resize((size, size), Image.BOX), np.float32)[..., None] / 255
    pixels = pixels * (1 - alpha) + fill * alpha + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def drawing(name: str, rng: np.random.Generator, size: int = 28) -> Image.Image:
    """A "hand drawing": the shape's outline in white on black, smaller, off-centre and wobbly, as one
    stroke of width 1-2 pixels."""
    big = size * SUPERSAMPLE
    points = shape(name)
    dense = np.concatenate([np.linspace(a, b, 6, endpoint=False)  # more points, so the hand can wobble
                            for a, b in zip(points, np.roll(points, -1, 0))])
    wobble = np.cumsum(rng.normal(0, 0.015, dense.shape), 0)
    wobble -= np.linspace(0, 1, len(dense))[:, None] * wobble[-1]  # the stroke ends where it started
    outline = place(dense + wobble, big, rng.uniform(0.45, 0.8), rng.uniform(-0.35, 0.35),
                    rng.uniform(-0.3, 0.3, 2))
    image = Image.new("L", (big, big), 0)
    width = int(rng.integers(1, 3)) * SUPERSAMPLE
    ImageDraw.Draw(image).line(outline + outline[:1], fill=int(rng.integers(180, 256)), width=width, joint="curve")
    return image.resize((size, size), Image.BOX)  # (the box average is the anti-aliasing)


def write_demo_real_or_drawing(directory: Path, per_class: int = 60, num_target: int = 600,
                               seed: int = 0) -> None:
    """`real_or_drawing/train_data/<class>/<n>.bmp` (n numbered on across classes, as the course's
    500 * class + k), `real_or_drawing/test_data/0/<00000>.bmp` in random class order, and the drawings'
    classes in `real_or_drawing/target_labels.csv` (`id,label`, the submission's own format)."""
    rng = np.random.default_rng(seed)
    root = directory / "real_or_drawing"
    for label, name in enumerate(DEMO_CLASSES):
        folder = root / "train_data" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            photo(name, rng).save(folder / f"{label * per_class + k}.bmp")
    labels = rng.permutation(np.arange(num_target) % len(DEMO_CLASSES))
    folder = root / "test_data" / "0"
    folder.mkdir(parents=True, exist_ok=True)
    for n, label in enumerate(labels):
        drawing(DEMO_CLASSES[label], rng).save(folder / f"{n:05d}.bmp")
    rows = "".join(f"{n},{label}\n" for n, label in enumerate(labels))
    (root / "target_labels.csv").write_text("id,label\n" + rows)
