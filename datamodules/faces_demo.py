"""HW8's demo set: synthetic 64x64 "faces" from a low-dimensional generator, in the course's layout
(`trainingset.npy`, `testingset.npy`, N x 64 x 64 x 3 uint8), for `fit` before the course's files are there.

Each face is drawn from about fifteen numbers (face shape and position, skin tone, hair, eyes, mouth, lighting,
background), so the training images lie near a low-dimensional manifold, as real faces do and as an
autoencoder's bottleneck assumes. The test set is half such faces and half images of other kinds, none of them
a corrupted face: "aliens" (one eye, green or blue skin, no hair), landscapes (sky, ground, sun) and
checkerboards. `demo_test_labels.npy` beside it (1 = anomaly) is the demo's answer key, which Kaggle keeps for the
real data: benchmarks/hw8_speed.py scores predictions with it.
"""

from pathlib import Path

import numpy as np

SIZE = 64
#: the demo's sizes: training faces, test images (half anomalies)
NUM_TRAIN, NUM_TEST = 2000, 1000
LABELS_FILE = "demo_test_labels.npy"


def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return x[None], y[None]  # (1, 64, 64), broadcast over a chunk of images


def _soft(distance: np.ndarray, edge: float = 1.0) -> np.ndarray:
    """1 inside (distance < 0), 0 outside, with an anti-aliased edge of about `edge` pixels."""
    return 0.5 - 0.5 * np.tanh(distance * np.float32(0.5 / edge))


def _ellipse(cx, cy, ax, ay, x, y) -> np.ndarray:
    """A signed distance-like field of ellipses, one per image (parameters are (n, 1, 1) arrays): < 0 inside."""
    return (np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2) - 1.0) * np.minimum(ax, ay)


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Blend `colour` (n, 3) into `canvas` (n, 64, 64, 3) where `mask` (n, 64, 64) is 1."""
    return canvas + mask[..., None] * (colour.astype(np.float32)[:, None, None, :] - canvas)


def _col(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32)[:, None, None]


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    x, y = _grid()
    top, bottom = rng.uniform(60, 230, (n, 3)), rng.uniform(60, 230, (n, 3))
    t = (y / (SIZE - 1))[..., None]
    return (top[:, None, None, :] * (1 - t) + bottom[:, None, None, :] * t).astype(np.float32)


def faces(rng: np.random.Generator, n: int, alien: bool = False) -> np.ndarray:
    """`n` faces as (n, 64, 64, 3) float pixels in [0, 255]; `alien`: one central eye, green or blue skin, no hair."""
    x, y = _grid()
    image = _background(rng, n)
    cx, cy = _col(rng.uniform(28, 36, n)), _col(rng.uniform(31, 37, n))
    ax, ay = _col(rng.uniform(13, 18, n)), _col(rng.uniform(17, 22, n))
    if alien:
        skin = np.where(rng.random((n, 1)) < 0.5, [[70, 170, 80]], [[70, 110, 190]]) + rng.normal(0, 12, (n, 3))
    else:
        shade = rng.uniform(0, 1, (n, 1))  # light to dark skin along one palette
        skin = (1 - shade) * np.array([[240, 205, 180]]) + shade * np.array([[120, 80, 55]]) + rng.normal(0, 8, (n, 3))
        hair = rng.uniform(0, 1, (n, 1)) * np.array([[120, 90, 60]]) + rng.uniform(10, 40, (n, 3))
        hair_mask = _soft(_ellipse(cx, cy - ay * 0.2, ax * 1.15, ay * 0.95, x, y)) * _soft(y - cy)
        image = _paint(image, hair_mask, hair)  # behind the head
    face = _soft(_ellipse(cx, cy, ax, ay, x, y))
    image = _paint(image, face, skin)
    if not alien:  # the fringe, over the forehead
        image = _paint(image, hair_mask * _soft(y - (cy - ay * _col(rng.uniform(0.5, 0.75, n))), 1.5), hair)
    # lighting: a linear shading across the face, from a random side
    angle = _col(rng.uniform(0, 2 * np.pi, n))
    light = 1 + 0.18 * ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / ax
    image = image * (1 + face[..., None] * (light[..., None] - 1))
    eye_y = cy - ay * _col(rng.uniform(0.15, 0.3, n))
    eye_size = _col(rng.uniform(1.8, 3.0, n))
    eye_colour = rng.uniform(10, 70, (n, 3))
    if alien:
        sclera = _soft(_ellipse(cx, eye_y, eye_size * 2.4, eye_size * 2.0, x, y))
        image = _paint(image, sclera, np.full((n, 3), 235.0))
        image = _paint(image, _soft(_ellipse(cx, eye_y, eye_size * 1.2, eye_size * 1.2, x, y)), eye_colour)
    else:
        gap = ax * _col(rng.uniform(0.32, 0.45, n))
        for side in (-1, 1):
            sclera = _soft(_ellipse(cx + side * gap, eye_y, eye_size * 1.6, eye_size, x, y), 0.7)
            image = _paint(image, sclera, np.full((n, 3), 240.0))
            pupil = _soft(_ellipse(cx + side * gap, eye_y, eye_size * 0.8, eye_size * 0.8, x, y), 0.7)
            image = _paint(image, pupil, eye_colour)
        nose = _soft(_ellipse(cx, cy + ay * 0.1, _col(np.full(n, 1.6)), ay * 0.16, x, y))
        image = image * (1 - 0.12 * nose[..., None])
    # mouth: the lower part of a thin ring, its curvature a smile (or not)
    mouth_y, width = cy + ay * _col(rng.uniform(0.38, 0.5, n)), ax * _col(rng.uniform(0.3, 0.5, n))
    bend = _col(rng.uniform(2, 6, n))
    curve = mouth_y - bend * ((x - cx) / width) ** 2 + bend * 0.5  # (y grows downwards: the corners go up)
    lips = _soft(np.abs(y - curve) - 1.1, 0.6) * _soft(np.abs(x - cx) - width, 0.8)
    image = _paint(image, lips, np.array([[170.0, 60.0, 70.0]]) + rng.normal(0, 15, (n, 3)))
    return image


def landscapes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sky, a hilly horizon and a sun: smooth images with a layout nothing like a face's."""
    x, y = _grid()
    sky = _background(rng, n)
    horizon = _col(rng.uniform(30, 48, n)) + _col(rng.uniform(2, 6, n)) * np.sin(
        x / _col(rng.uniform(5, 12, n)) + _col(rng.uniform(0, 6, n)))
    ground = _soft(horizon - y)
    image = _paint(sky, ground, rng.uniform(30, 140, (n, 3)) * np.array([[0.6, 1.0, 0.5]]))
    sun = _soft(_ellipse(_col(rng.uniform(8, 56, n)), _col(rng.uniform(6, 20, n)), _col(np.full(n, 5.0)),
                         _col(np.full(n, 5.0)), x, y)) * (1 - ground)
    return _paint(image, sun, np.array([[250.0, 220.0, 90.0]]) + rng.normal(0, 5, (n, 3)))


def checkerboards(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two-colour checkerboards of random cell size and phase."""
    x, y = _grid()
    cell = _col(rng.integers(4, 17, n).astype(np.float32))
    squares = ((np.floor((x + _col(rng.uniform(0, 16, n))) / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    return _paint(_paint(np.zeros((n, SIZE, SIZE, 3), np.float32), np.ones_like(squares), rng.uniform(0, 255, (n, 3))),
                  squares, rng.uniform(0, 255, (n, 3)))


def to_uint8(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float pixels plus a little sensor noise, as the stored uint8."""
    noise = rng.standard_normal(pixels.shape, dtype=np.float32) * 3
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def make_faces(n: int, seed: int, chunk: int = 50) -> np.ndarray:
    """`n` demo faces, (n, 64, 64, 3) uint8, drawn in chunks (small float arrays stay in the CPU cache)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([to_uint8(faces(rng, min(chunk, n - i)), rng) for i in range(0, n, chunk)])


def make_test(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` test images, about half faces and half anomalies of three kinds, shuffled; and their labels (1 = anomaly)."""
    rng = np.random.default_rng(seed)
    normal = n // 2
    kinds = np.array_split(np.arange(n - normal), 3)
    parts = [to_uint8(faces(rng, normal), rng), to_uint8(faces(rng, len(kinds[0]), alien=True), rng),
             to_uint8(landscapes(rng, len(kinds[1])), rng), to_uint8(checkerboards(rng, len(kinds[2])), rng)]
    images, labels = np.concatenate(parts), np.r_[np.zeros(normal), np.ones(n - normal)].astype(np.int64)
    order = rng.permutation(n)
    return images[order], labels[order]


def write_demo_faces(directory: Path, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST, seed: int = 0) -> None:
    """`trainingset.npy` (faces only) and `testingset.npy` (faces and anomalies) in `directory`, as the course
    hands them out, plus the demo's answer key."""
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "trainingset.npy", make_faces(num_train, seed))
    test, labels = make_test(num_test, seed + 1)
    np.save(directory / "testingset.npy", test)
    np.save(directory / LABELS_FILE, labels)
