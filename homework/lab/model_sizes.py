"""The lecture's test of optimization against model bias by model size: a bigger network whose training loss
ends higher than a smaller one's (after no more epochs) has an optimization problem, since it could have
represented the smaller one. The advisor (advisor.py) compares a fit with the student's earlier runs of the
same homework, data directory and split, from their run.json. Apart from advisor.py because it reads other runs,
not this run's curves.

Threshold (tested on constructed runs in tests/test_advisor.py):
  SIZE_MARGIN  0.10  a bigger model's final training loss 10% above a smaller earlier run's, after at least as
                     many epochs: optimization.
"""

import math
from dataclasses import dataclass
from pathlib import Path

from datamodules.lab_hooks import advice
from homework import runs

SIZE_MARGIN = 0.10


@dataclass
class RunSize:
    """A run's model size and how far it got on the training data (from its run.json)."""

    name: str
    parameters: int
    train_loss: float
    epochs: int

    @classmethod
    def of(cls, name: str, record: dict) -> "RunSize | None":
        parameters, loss = record.get("parameters"), record.get("train_loss")
        if not parameters or loss is None or not math.isfinite(loss):  # (older run.json files: not compared)
            return None
        return cls(name, int(parameters), float(loss), int(record.get("epochs") or 0))


def comparable_sizes(run_dir: Path, record: dict, root: Path | None = None) -> list[RunSize]:
    """Earlier runs of the same homework on the same data directory and split, with a parameter count and a
    final training loss in their run.json (not this run)."""
    found = []
    for other in runs.run_dirs(root or run_dir.parent):
        if other.resolve() == run_dir.resolve():
            continue
        theirs = runs.read_record(other) or {}
        if (theirs.get("homework"), theirs.get("data_dir"), theirs.get("split")) == \
                (record.get("homework"), record.get("data_dir"), record.get("split")):
            size = RunSize.of(other.name, theirs)
            if size is not None:
                found.append(size)
    return found


def compare_sizes(this: RunSize, sizes, remedies, settings: dict, evidence: list, notes: list):
    """("optimization trouble", its remedies) where a smaller earlier run, after no more epochs, reached a
    clearly lower training loss; else (None, []). The notes say which comparisons were not fair."""
    verdict, fix = None, []
    smaller = [s for s in sizes
               if s.parameters < this.parameters and s.train_loss < (1 - SIZE_MARGIN) * this.train_loss]
    fair = [s for s in smaller if this.epochs >= s.epochs]
    if fair:
        s = min(fair, key=lambda s: s.train_loss)
        verdict = "optimization trouble"
        evidence.append(f"this run's model ({this.parameters:,} parameters) ends with training loss "
                        f"{this.train_loss:.4g} after {this.epochs} epochs, higher than the smaller model of run "
                        f"{s.name} ({s.parameters:,} parameters: {s.train_loss:.4g} after {s.epochs} epochs): a "
                        f"bigger model with a higher training loss points to optimization, not model bias")
        fix = advice("optimization", remedies, settings)
    for s in [s for s in smaller if s not in fair]:
        notes.append(f"run {s.name}'s smaller model ({s.parameters:,} parameters) reached a lower training loss "
                     f"({s.train_loss:.4g}), but after more epochs ({s.epochs} vs {this.epochs}): not a fair "
                     f"size comparison")
    for s in sizes:
        if s.parameters > this.parameters and s.train_loss > (1 + SIZE_MARGIN) * this.train_loss:
            notes.append(f"earlier run {s.name}'s bigger model ({s.parameters:,} parameters) ended with a higher "
                         f"training loss ({s.train_loss:.4g}) than this one ({this.train_loss:.4g}): that run had "
                         f"optimization trouble")
    if sizes and not fair:
        shown = sorted([*sizes, this], key=lambda s: s.parameters)[:6]
        notes.append("sizes compared (same data and split; final training loss): " + ", ".join(
            f"{'this run' if s is this else s.name} {s.parameters:,} parameters {s.train_loss:.4g}" for s in shown))
    return verdict, fix
