"""Where runs live and what they record, and which checkpoint `--ckpt_path best|last` means.

Every command that trains or evaluates gets its own directory `<root>/<stamp>_<command>[_foldKofN][_demo]`.
A fit writes `run.json` there: the resolved data directory, the split, the monitored metric and
the best score so far with its epoch and checkpoint. `best` is decided from these records alone:
the best-scoring checkpoint among the runs whose validation scores are comparable (same data
directory and split settings), never just the newest run's.
"""

import datetime as dt
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from datamodules.base import DataError

RECORD = "run.json"


def new_run_dir(root: Path, command: str, tags: list[str]) -> Path:
    """A fresh, not yet created directory `<root>/<stamp>_<command>[_<tag>...]`."""
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    name = "_".join([stamp, command, *tags])
    run_dir, n = root / name, 1
    while run_dir.exists():
        run_dir, n = root / f"{name}-{n}", n + 1
    return run_dir


def fold_tag(num_folds: int | None, fold: int | None) -> list[str]:
    return [] if num_folds is None else [f"fold{fold}of{num_folds}"]


def write_json(data: dict, path: Path) -> None:
    """Write through a temp file + rename: a run killed mid-write keeps its previous record."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


class RunRecord(pl.Callback):
    """Keeps `run.json` up to date during a fit (what `--ckpt_path best` and k-fold summaries read)."""

    def __init__(self, run_dir: Path, homework: str, data_dir: Path, demo: bool, split: dict) -> None:
        self.path = run_dir / RECORD
        self.record = {"homework": homework, "command": "fit", "status": "running",
                       "started": dt.datetime.now().isoformat(timespec="seconds"),
                       "data_dir": str(data_dir.resolve()), "demo": demo, "split": split,
                       "monitor": None, "mode": None, "best_score": None, "best_epoch": None,
                       "best_checkpoint": None, "epochs": 0}

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero and self.path.parent.is_dir():
            write_json(self.record, self.path)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record.update(monitor=getattr(pl_module, "monitor", None), mode=getattr(pl_module, "mode", None))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["epochs"] = trainer.current_epoch + 1

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Called as each checkpoint is saved (the best one is already known then): a new best is recorded."""
        ckpt = trainer.checkpoint_callback
        if ckpt is None or not ckpt.best_model_path or ckpt.best_model_score is None:
            return
        best = os.path.relpath(ckpt.best_model_path, self.path.parent)
        if best != self.record["best_checkpoint"]:
            score = float(ckpt.best_model_score)
            self.record.update(best_checkpoint=best, best_epoch=trainer.current_epoch,
                               best_score=score if math.isfinite(score) else None)
            self._save(trainer)

    def finish(self, trainer: pl.Trainer, status: str) -> None:
        self.record["status"] = status
        self._save(trainer)


def read_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None


def discard_if_empty(run_dir: Path | None) -> bool:
    """A run that failed before its first checkpoint leaves nothing behind; True when it was removed."""
    if run_dir is None or not run_dir.is_dir() or any(run_dir.rglob("*.ckpt")):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


@dataclass(frozen=True)
class Choice:
    """A checkpoint picked for `--ckpt_path best|last`, with the words that say why."""

    path: Path
    reason: str


def run_dirs(root: Path) -> list[Path]:
    """Run directories under `root`: its children, and the fold runs inside a cross-validation directory."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir():
            found.append(child)
            found += [g for g in child.iterdir() if g.is_dir() and (g / RECORD).exists()]
    return found


def find_last(root: Path) -> Choice:
    """The newest run's `last.ckpt`."""
    lasts = [d / "checkpoints" / "last.ckpt" for d in run_dirs(root)]
    lasts = [p for p in lasts if p.is_file()]
    if not lasts:
        raise DataError(f"--ckpt_path last: no checkpoint under '{root}'; train first with `fit` "
                        f"(or pass --trainer.default_root_dir where your runs are, or a .ckpt file)")
    newest = max(lasts, key=lambda p: p.stat().st_mtime)
    return Choice(newest, f"the newest run's last checkpoint: {newest}")


def describe_split(split: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in split.items() if v is not None) or "no split settings"


def find_best(root: Path, data_dir: Path | None = None, split: dict | None = None) -> Choice:
    """The best-scoring checkpoint among the runs comparable to the newest one: trained on the same data
    directory with the same split settings. `data_dir` / `split` (the settings named on the command line)
    select another group."""
    records = []
    for run_dir in run_dirs(root):
        record = read_record(run_dir)
        if record is None or record.get("best_checkpoint") is None or record.get("best_score") is None:
            continue
        path = (run_dir / record["best_checkpoint"]).resolve()
        if path.is_file():
            records.append((run_dir, record, path))
    if not records:
        raise DataError(f"--ckpt_path best: no run under '{root}' has a checkpoint with a finite score; "
                        f"train first with `fit` (or pass --trainer.default_root_dir where your runs are, "
                        f"or a .ckpt file)")
    newest = max(records, key=lambda r: r[2].stat().st_mtime)
    want_dir = str(data_dir.resolve()) if data_dir is not None else newest[1]["data_dir"]
    want_split = {**newest[1]["split"], **(split or {})}
    comparable = [r for r in records if r[1]["data_dir"] == want_dir and r[1]["split"] == want_split]
    if not comparable:
        suggestion = f"--data.data_dir {newest[1]['data_dir']}" if newest[1]["data_dir"] != want_dir else \
            " ".join(f"--data.{k} {v}" for k, v in newest[1]["split"].items() if want_split.get(k) != v)
        cv = newest[0].parent
        if cv.resolve() != root.resolve():
            suggestion += f" (or --ckpt_path {cv} for the k-fold ensemble)"
        raise DataError(f"--ckpt_path best: no run under '{root}' was trained on '{want_dir}' with "
                        f"{describe_split(want_split)}, so no score compares; the newest run was trained with "
                        f"{suggestion}")
    sign = -1 if comparable[0][1].get("mode") == "max" else 1
    # best score first; between equal scores, the newer checkpoint
    run_dir, record, path = min(comparable, key=lambda r: (sign * r[1]["best_score"], -r[2].stat().st_mtime))
    return Choice(path, f"the best of {len(comparable)} comparable run(s) (same data and split): {run_dir.name}, "
                        f"epoch {record['best_epoch']}, {record['monitor']} {record['best_score']:.4f}")
