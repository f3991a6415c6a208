"""Where `runs/` and `data/` live: the project folder, whatever the working directory.

A student who runs `python ~/proj/homework/hw1.py fit` from `~` means the project's data and runs, not a
new `~/data` and `~/runs` (the convention of lightning-hydra-template's PROJECT_ROOT). So the default
`runs/hwN` and `data/hwN` are under the *home*:
  1. `$NTU_ML_HOME`, when set (e.g. a Google Drive folder in Colab, so runs outlive the session);
  2. else the project folder, when this code runs from a source checkout (`setup.cfg` beside `homework/`);
  3. else (installed as a package) the working directory.
Paths a user types (`--data.data_dir ./covid`) stay relative to the working directory, as in any shell.
"""

import os
from pathlib import Path

HOME_ENV = "NTU_ML_HOME"
PROJECT = Path(__file__).resolve().parents[1]


def project_root() -> Path | None:
    """The source checkout this code runs from, None when installed as a package."""
    return PROJECT if (PROJECT / "setup.cfg").is_file() and (PROJECT / "homework").is_dir() else None


def home() -> Path:
    """The folder holding `runs/` and `data/`: `.` when it is the working directory (so paths print as
    `runs/hw1/...`, as the README shows them), else its absolute path."""
    chosen = os.environ.get(HOME_ENV)
    path = Path(chosen).expanduser().resolve() if chosen else (project_root() or Path.cwd().resolve())
    try:
        return Path(".") if path == Path.cwd().resolve() else path
    except FileNotFoundError:  # the working directory was deleted under us
        return path


def elsewhere() -> str | None:
    """One line saying where runs and data go when that is not the working directory, else None."""
    where = home()
    if where == Path("."):
        return None
    why = f"${HOME_ENV}" if os.environ.get(HOME_ENV) else "the project folder"
    return (f"Runs and data live in {why}, {where} (runs/, data/), not in the working directory "
            f"(set {HOME_ENV} to choose another folder)")
