"""A full disk and a folder the user may not write to are the user's conditions, not the program's faults.

Colab's disk and a Drive quota fill up; a shared dataset mount or a Drive folder without write access is
read-only. Wherever the project writes (checkpoints, `last.ckpt`, plots, submissions, demo data, caches, locks,
W&B's folder), such an OSError (ENOSPC, EDQUOT, EACCES, EROFS, EPERM) becomes one line naming the path, the free
space there and what to do; `homework/cli/main.py` adds the `fit --resume` command where the run can go on.
torch reports a full disk while saving a checkpoint as a RuntimeError of its zip writer (`[enforce fail at
inline_container.cc:...] unexpected pos`), which `datamodules.atomic.replacing` turns back into ENOSPC.
"""
import errno
import shutil
from pathlib import Path

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NO_WRITE = {errno.EACCES, errno.EROFS, errno.EPERM}
#: torch's zip writer, when a write to the file failed (torch 2.x: caffe2/serialize/inline_container.cc)
TORCH_WRITE_FAILED = ("inline_container.cc", "PytorchStreamWriter failed")


def free_space(path: Path) -> int | None:
    """Bytes free on the file system holding `path` (its nearest existing folder), None when it cannot tell."""
    for folder in [path, *path.parents]:
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def os_error(err: BaseException | None) -> OSError | None:
    """The full-disk or no-permission OSError behind `err` (itself, its cause or its context), None if none. Not
    a context raised `from None`: the error raised instead already says it (naming the option, say)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in NO_SPACE | NO_WRITE:
            return err
        err, seen = err.__cause__ or (None if err.__suppress_context__ else err.__context__), seen + 1
    return None


def torch_write_failed(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and any(mark in str(err) for mark in TORCH_WRITE_FAILED)


def reason(err: OSError, path: Path | None = None) -> str:
    """What a full-disk or no-permission OSError means, in words ("no space left on the disk (1.2 MB free)")."""
    if err.errno in NO_SPACE:
        free = free_space(path) if path is not None else None
        what = "the disk quota is used up" if err.errno == errno.EDQUOT else "no space left on the disk"
        return what + (f" ({_size(free)} free)" if free is not None else "")
    if err.errno in NO_WRITE:
        return "a read-only file system" if err.errno == errno.EROFS else "permission denied"
    return err.strerror or type(err).__name__


def problem(err: BaseException) -> str | None:
    """One line for a full disk or a folder the user may not write to, None for any other error."""
    found = os_error(err)
    if found is None:
        return None
    path = Path(found.filename) if found.filename else None
    where = f"cannot write '{path}'" if path is not None else "cannot write"
    if found.errno in NO_SPACE:
        return (f"{where}: {reason(found, path)}; free some space, or write elsewhere with --trainer.default_root_dir "
                f"DIR (or set NTU_ML_HOME)")
    return (f"{where}: {reason(found)}; write elsewhere: --trainer.default_root_dir DIR for runs, "
            f"--submission.output_dir DIR for predictions, or set NTU_ML_HOME")


def named(err: BaseException, path: Path) -> BaseException:
    """`err` as it should reach the user, naming `path` (the file being written, not its hidden temporary
    sibling): a full-disk or no-permission OSError, or torch's failed write (which is a full disk)."""
    if torch_write_failed(err):
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    if isinstance(err, OSError) and err.errno in NO_SPACE | NO_WRITE:
        return OSError(err.errno, err.strerror, str(path))
    return err
