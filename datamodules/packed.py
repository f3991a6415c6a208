"""Many small variable-length (T, F) tensors packed once into one memory-mapped array plus offsets.

The speech homeworks ship their features as thousands of small `torch.save`d files: HW2 has 5k
utterances of (T, 39) MFCC frames, HW4 56k `uttr-*.pt` mel spectrograms of (T, 40). Opening them
in every run, or keeping them as thousands of tensors, is slow and memory-hungry; concatenating
them (as the sample code does, once per run and per split) costs a copy of everything. Here they
are read once, checked, and written next to the data as one float16 array of all rows with int64
offsets: the k-th tensor is `data[offsets[k]:offsets[k + 1]]`. Later runs memory-map the file and
start in seconds; a changed set of files (names, sizes or mtimes) is packed again.
"""

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info

from adapters import numpy_array_globals
from datamodules.console import redraws
from datamodules.atomic import build_cache
from datamodules.errors import DataError

log = logging.getLogger(__name__)

#: Bump when the on-disk format changes, so old caches are not misread.
FORMAT_VERSION = 1


def source_key(files: Sequence[Path], root: Path, *settings) -> str:
    """A short hash of the files' paths (relative to `root`), sizes and mtimes, plus `settings`:
    a cache named by it is stale as soon as a file is added, removed, renamed or rewritten."""
    stats = []
    for path in files:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        stats.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return hashlib.sha1(json.dumps([settings, stats]).encode()).hexdigest()[:12]


def load_tensor(path: Path) -> torch.Tensor:
    """A `torch.save`d tensor, or a one-line DataError naming the file and what it holds.

    A saved numpy array (`torch.save(np_array)`, or `np.save` to a .pt name) is read too: students convert
    features with numpy, and torch's safe loader refuses numpy's classes unless they are allowlisted."""
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":  # np.save's format under a .pt name
                f.seek(0)
                value = np.load(f, allow_pickle=False)
            else:
                with torch.serialization.safe_globals(numpy_array_globals()):
                    value = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as err:  # a truncated download, not a torch file, a pickled object, ...
        holds = _pickled_packages(path)
        if holds:
            raise DataError(f"{path}: holds pickled {' and '.join(holds)} objects, not a tensor; save the features "
                            f"with torch.save(tensor)") from None
        raise DataError(f"{path}: cannot be read as a saved tensor ({type(err).__name__})") from None
    if isinstance(value, np.ndarray):
        try:
            value = torch.from_numpy(np.ascontiguousarray(value))
        except TypeError:
            raise DataError(f"{path}: holds a numpy array of {value.dtype}, expected numbers") from None
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: holds a {type(value).__name__}, expected a tensor")
    return value


def _pickled_packages(path: Path) -> list[str]:
    """The packages of the classes a `torch.save`d file holds that a safe load refuses (`pandas`, ...)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" if not isinstance(g, tuple) else g[1]
               for g in numpy_array_globals()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a torch.save zip (a truncated download, a text file, ...), or an older torch
        return []
    return sorted({name.split(".")[0] for name in found if name not in allowed} - {"builtins"})


#: A per-tensor check: gets the file and its tensor, returns the tensor to pack, raises DataError.
Check = Callable[[Path, torch.Tensor], torch.Tensor]


def require_frames(feature_dim: int, lengths: Mapping[Path, int] | None = None,
                   lengths_source: str = "the metadata") -> Check:
    """The usual check: a finite float tensor of shape (T, `feature_dim`) with T >= 1; with `lengths`,
    T must also be the frame count listed for its file there (HW4's `mel_len`, read from `lengths_source`)."""

    def check(path: Path, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() != 2 or tensor.shape[1] != feature_dim or tensor.shape[0] == 0:
            raise DataError(f"{path}: tensor of shape {tuple(tensor.shape)}, expected (frames, {feature_dim})")
        if lengths is not None and tensor.shape[0] != lengths[path]:
            raise DataError(f"{path}: {tensor.shape[0]} frames, but {lengths_source} says {lengths[path]}")
        if not tensor.is_floating_point():
            raise DataError(f"{path}: {tensor.dtype} tensor, expected floating-point features")
        finite = torch.isfinite(tensor)
        if not finite.all():
            frame = int((~finite).any(1).nonzero()[0])
            kind = "NaN" if tensor[frame].isnan().any() else "infinite value"
            raise DataError(f"{path}: {kind} in frame {frame}")
        return tensor

    return check


class PackedTensors:
    """Tensors of shape (T_k, F) stored back to back: `data` is (sum T_k, F), `offsets` (n + 1,).

    `data` is memory-mapped (copy-on-write, so torch may index it; nothing is written back),
    and pickles as its path: a DataLoader worker re-opens the file instead of copying the array.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        meta = json.loads((directory / "meta.json").read_text())
        self.shape, self.dtype = tuple(meta["shape"]), np.dtype(meta["dtype"])
        self.offsets = torch.from_numpy(np.load(directory / "offsets.npy"))
        self._data: torch.Tensor | None = None

    @property
    def data(self) -> torch.Tensor:
        if self._data is None:
            array = np.memmap(self.directory / "data.bin", dtype=self.dtype, mode="c", shape=self.shape)
            self._data = torch.from_numpy(array)
        return self._data

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.data[int(self.offsets[k]):int(self.offsets[k + 1])]

    @property
    def lengths(self) -> torch.Tensor:
        """Rows (frames) of each packed tensor."""
        return self.offsets.diff()

    @property
    def num_rows(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}


def pack_tensors(
    files: Sequence[Path],
    cache_dir: Path,
    name: str,
    root: Path,
    check: Check,
    dtype: np.dtype | str = np.float16,
    load: Callable[[Path], torch.Tensor] = load_tensor,
) -> PackedTensors:
    """Pack `files` (in this order) into `cache_dir/<name>-<key>/`, or re-open that cache when it is current.

    Each file is loaded with `load` and passed through `check` (which raises a one-line DataError
    naming the file) before anything is kept, with a tqdm progress bar on a terminal (one line when output
    goes to a log: a redrawn bar would leave carriage-return fragments there). The cache is written to a
    temporary folder and renamed when complete, so an interrupted run never leaves a half cache;
    older caches of the same `name` are then removed. `key` hashes the files' names, sizes and
    mtimes (relative to `root`) and `dtype`, so a changed set is packed again. Two runs started at once
    pack it once: the second waits for the first's lock and reuses its cache (datamodules.atomic).
    """
    from tqdm import tqdm

    dtype = np.dtype(dtype)
    target = cache_dir / f"{name}-{source_key(files, root, FORMAT_VERSION, dtype.str)}"
    rows = 0

    def pack(tmp: Path) -> None:
        nonlocal rows
        offsets, width = [0], None
        limit = np.finfo(dtype).max if dtype.kind == "f" else None
        what, bar = f"Packing {len(files)} {name} files once", redraws()
        if not bar:
            rank_zero_info(f"{what} (into {target})")
        with open(tmp / "data.bin", "wb") as out:
            for path in tqdm(files, desc=what, unit="file", dynamic_ncols=True, leave=False, disable=not bar):
                tensor = check(path, load(path))
                if width is None:
                    width = tensor.shape[1]
                elif tensor.shape[1] != width:
                    raise DataError(f"{path}: {tensor.shape[1]} features per row, the files before it have {width}")
                if limit is not None and tensor.abs().max() > limit:
                    raise DataError(f"{path}: values beyond ±{limit:g} do not fit the {dtype.name} cache")
                out.write(tensor.numpy().astype(dtype).tobytes())
                offsets.append(offsets[-1] + len(tensor))
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        (tmp / "meta.json").write_text(json.dumps({"shape": [offsets[-1], width or 0], "dtype": dtype.str,
                                                   "files": len(files)}))
        rows = offsets[-1]

    # meta.json is written last: a folder that has it is complete
    if not build_cache(target, pack, lambda folder: (folder / "meta.json").exists(), f"packed {name} features",
                       "feature cache", "pass --data.cache_dir DIR with a writable folder", directory=True):
        return PackedTensors(target)
    for old in cache_dir.glob(f"{name}-*"):
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    size = (target / "data.bin").stat().st_size
    rank_zero_info(f"Packed {len(files)} {name} files ({rows:,} rows, {size / 2**20:.0f} MiB) into {target}")
    return PackedTensors(target)


def frame_windows(data: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
                  concat_nframes: int) -> torch.Tensor:
    """The (B, concat_nframes, F) windows of rows centred on `rows`, each clamped to its tensor's
    [start, end): at an edge the first/last row repeats, as the HW2 sample's `shift` does.

    One index tensor of B x concat_nframes and one gather, on `data`'s device: no per-frame Python,
    and nothing bigger than the batch itself is ever built (the sample materialises every window).
    """
    half = concat_nframes // 2
    shifts = torch.arange(-half, half + 1, device=rows.device)
    index = (rows[:, None] + shifts).clamp_(starts[:, None], ends[:, None] - 1)
    return data[index]
