"""The one rule for every file this project writes beside a user's files: it never replaces a file it did not write.

Each folder the project writes an output into (a submission, a plot, a study's files, a config) keeps a record,
`.ntu-ml-outputs.json`, of the files written there and the inputs each was made from. Before writing `path`:
  - a run directory's own files (`config.yaml`, `run.json`, checkpoints, its lock, this record) are never an output
    target: a one-line DataError, whatever the name;
  - a free path is written;
  - a file this project wrote there from the same inputs is replaced (the same command run again);
  - any other file (the user's own, or one made from other inputs) is kept: under the project's default name the
    output goes beside it, as `<stem>-2<suffix>` (then -3, ...), and the caller says so; under a name the user
    chose (an option) the command is refused in one line naming the option and the file.
Why a record and not the file's age or contents: a student's `report.md` and an old `pred.csv` look alike to a
program; only what this project wrote, and from what, tells them apart.
Pictures follow it through `save_figure`; a command says where an output went instead with `kept`.
"""
import io
import json
from pathlib import Path

from datamodules.atomic import replacing
from datamodules.errors import DataError

MANIFEST = ".ntu-ml-outputs.json"
LEGACY = "predictions.json"  # what the submission writer kept before this record (still read)
RUN_FILES = {"config.yaml", "run.json", "learning_curve.json", ".training.lock", MANIFEST, LEGACY}


def run_file(path: Path) -> bool:
    """Whether `path` is one of a run directory's own files (what `--resume`, `best` and `diagnose` read)."""
    if path.suffix == ".ckpt":
        return True
    parent = path.parent
    if parent.name == "checkpoints" and (parent.parent / "run.json").is_file():
        return True
    return path.name in RUN_FILES and ((parent / "run.json").is_file() or (parent / "config.yaml").is_file()
                                       or path.name in (MANIFEST, LEGACY))


def written(directory: Path) -> dict[str, str]:
    """{file name: the inputs it was made from} for each file this project wrote in `directory`."""
    record: dict[str, str] = {}
    for name in (LEGACY, MANIFEST):
        try:
            loaded = json.loads((directory / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(loaded, dict):
            record.update({str(k): str(v) for k, v in loaded.items()})
    return record


def target(path: Path, inputs: str = "", option: str | None = None) -> Path:
    """Where to write the output `path` made from `inputs` (the module docstring's rule): `path` itself, or beside
    it under a new name when `option` is None (the default name) and a file not to replace is there.
    `option`: the option that named the path (`--submission.filename`): such a path is never moved, but refused."""
    named = f"{option} {path}" if option else str(path)
    if run_file(path):
        raise DataError(f"{named}: that is a run's own file ({path.name}), never an output; choose another name "
                        f"or folder")
    if path.is_dir():
        raise DataError(f"{named}: a folder is there; choose a file name")
    known = written(path.parent)
    if not path.exists() or known.get(path.name) == inputs:
        return path
    if option is not None:
        why = "this project made it from other inputs" if path.name in known else "this project did not write it"
        raise DataError(f"{named}: a file is already there and {why}, so it is kept; choose another name, or move "
                        f"it away first")
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists() or known.get(candidate.name) == inputs:
            return candidate
        n += 1


def remember(path: Path, inputs: str = "") -> None:
    """Record that this project wrote `path` from `inputs` (after writing it)."""
    directory = path.parent
    record = written(directory)
    record[path.name] = inputs
    with replacing(directory / MANIFEST, "w") as f:
        json.dump(record, f, indent=1)


def write(path: Path, data: str | bytes, inputs: str = "", option: str | None = None) -> Path:
    """Write the output `path` by the rule (atomically, `datamodules.atomic`), record it, and return where it went."""
    from datamodules.atomic import write_atomically

    path = target(path, inputs, option)
    write_atomically(path, data)
    remember(path, inputs)
    return path


def save_figure(figure, path: Path, inputs: str = "", option: str | None = None, **savefig) -> Path:
    """Save a matplotlib figure (or a PIL image) as the output `path` by the rule: drawn in memory, then `write`.
    Returns where it went (beside `path` when a file not to replace is there; the caller says so with `kept`)."""
    buffer = io.BytesIO()
    kind = path.suffix.lstrip(".").lower() or "png"
    if hasattr(figure, "savefig"):
        figure.savefig(buffer, format=kind, **savefig)
    else:  # a PIL image
        figure.save(buffer, format="JPEG" if kind == "jpg" else kind.upper())
    return write(path, buffer.getvalue(), inputs, option)


def kept(chosen: Path, went: Path) -> str:
    """What a command adds to the line naming an output that went to `went` instead of `chosen`: why the file at
    `chosen` was left alone ("" when nothing was in the way)."""
    if Path(went) == Path(chosen):
        return ""
    why = "made from other inputs" if chosen.name in written(chosen.parent) else "not written by this project"
    return f" ({chosen.name} there was {why}, so it is kept)"


def check(path: Path, inputs: str = "", option: str | None = None) -> None:
    """Refuse now (a one-line DataError) the output `path` that `write` would refuse later: a name the user chose
    (`option`) where a file not to replace is, or a run's own file. Called before the work that makes the output
    (a fit's pictures are drawn at its end: the mistake is said before training, not after)."""
    target(path, inputs, option)
