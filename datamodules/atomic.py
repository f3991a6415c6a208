"""Files that two runs started at once may both write: demo data sets, feature caches, tokenizer models.

Each is built once. The first run takes a lock beside it (`filelock`, which torch already depends on),
builds into a hidden temporary sibling and renames that into place (`os.replace`: atomic on one file
system). A run started at the same moment waits for the lock, then finds the finished result and reuses
it instead of doing the same minutes of work. Readers take no lock: they see nothing or the whole result,
never a half-written one, and a run killed mid-build leaves no partial result (the lock is released by the
OS when its process dies, so the next run builds it). Something else at the target's path that is not the
result is the user's unless this project made it (`made_here`): never replaced, one line instead.
"""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info

from datamodules.disk import named as _named_for_the_user
from datamodules.errors import DataError

#: Every temporary sibling's name ends with this (before the target's own suffix): easy to spot and clean.
TMP_MARK = ".tmp"
#: An empty file inside every folder `build_once` makes: how a later run tells the project's folder (rebuilt when it
#: is not ready, e.g. an older version's demo set) from a folder of the user's at the same path (never replaced).
MADE_HERE = ".ntu-ml-built"


def lock_path(target: Path) -> Path:
    """The (hidden, empty) lock file beside `target`. It stays after use: deleting a lock file that another
    process may be waiting on would let a third one in."""
    return target.with_name(f".{target.name}.lock")


@contextmanager
def locked(target: Path, what: str) -> Iterator[None]:
    """Hold `target`'s lock; when another process holds it, say once what we wait for, then wait."""
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path(target))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        rank_zero_info(f"Waiting for another run to finish {what} ({target})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _usual_permissions(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp make owner-only files; the result should read like any other file (umask applies)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def temporary_sibling(target: Path, directory: bool = False) -> Path:
    """A new, hidden, uniquely named file (or folder) beside `target`, keeping its suffix (np.save, say,
    would otherwise add one): `.<stem>.<random>.tmp<suffix>`."""
    if directory:
        tmp = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_MARK)
    else:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=TMP_MARK + target.suffix)
        os.close(fd)
    _usual_permissions(Path(tmp), directory)
    return Path(tmp)


def remove(path: Path) -> None:
    """Delete a file or folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def replacing(path: Path, mode: str = "wb", **open_args):
    """Write a temporary sibling of `path` (an open file), which then replaces `path` in one rename: a reader,
    or a process killed meanwhile, sees the old file or the new one, never half of one. The one way this
    project writes a file others read: caches, run.json, checkpoints, submissions."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(path)
        with open(tmp, mode, **open_args) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            remove(tmp)
        said = _named_for_the_user(err, path)  # a full disk or a read-only folder: named by the file being written
        if said is not err:
            raise said from err
        raise


def write_atomically(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` in one step (see `replacing`)."""
    with replacing(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def made_here(target: Path) -> bool:
    """Whether `build_once` made `target`: a folder holding MADE_HERE; a file, or a folder an older version made
    (before the mark), with the lock `build_once` takes (and leaves) beside it."""
    return (target.is_dir() and (target / MADE_HERE).exists()) or lock_path(target).exists()


def build_once(target: Path, build: Callable[[Path], None], ready: Callable[[Path], bool] = Path.exists,
               directory: bool = False, what: str = "writing") -> bool:
    """Make `target` (a file, or a folder with `directory=True`) unless `ready(target)` says it is there.

    `build(tmp)` writes the result to `tmp`, a temporary sibling (a folder already created, or an empty
    file), under `target`'s lock; it is then renamed to `target`. Another process doing the same waits for
    the lock and finds `target` ready. A target that exists but is not ready is replaced only when this project
    made it (`made_here`: an older version's), saying so; anything else there is
    the user's, kept, and refused in one line (a DataError). Returns True when this call built it; raises what
    `build` raised, leaving nothing behind.
    """
    if ready(target):
        return False
    result = what.split(" ", 1)[-1]  # "writing the demo set" -> "the demo set"
    if target.exists() and not made_here(target):  # (looked at before taking the lock: refusing makes nothing)
        kind = "folder" if target.is_dir() else "file"
        raise DataError(f"'{target}': a {kind} this project did not make is there and it is not {result}, so it "
                        f"is kept; move it away (a folder of your data: pass it with --data.data_dir)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target, what):
        if ready(target):  # another process built it while we waited
            return False
        if target.exists():
            rank_zero_info(f"Replacing {target}: this project made it, but it is not {result} this version reads "
                           f"(an older version's)")
        tmp = temporary_sibling(target, directory)
        try:
            build(tmp)
            if directory:
                (tmp / MADE_HERE).touch()
            if directory and target.exists():  # os.replace cannot replace a non-empty folder
                stale = temporary_sibling(target, directory=True)
                os.replace(target, stale)
                remove(stale)
            os.replace(tmp, target)
        except BaseException:
            remove(tmp)
            raise
    return True


def build_cache(target: Path, build: Callable[[Path], None], ready: Callable[[Path], bool], contents: str,
                cache: str, hint: str, directory: bool = False) -> bool:
    """`build_once` for a cache of `contents` (e.g. "packed train features"): a `cache` (e.g. "feature cache")
    that cannot be written is a one-line DataError ending with `hint`; one already there is said. True when
    this call built it."""
    try:
        built = build_once(target, build, ready, directory, what=f"writing the {contents}")
    except OSError as err:
        raise DataError(f"cannot write the {cache} in '{target.parent}' ({err.strerror or err}); {hint}") from None
    if not built:
        rank_zero_info(f"Using the {contents} in {target}")
    return built
