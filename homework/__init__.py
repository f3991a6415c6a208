"""The homeworks' commands, in three layers (docs/architecture.md):

- `hwN.py`, the entry points (`registry.py` finds them, and every shared list reads it): which DataModule,
  which task, which recipe (`configs/`);
- `cli/`, the command every homework shares, and `runs/`, where runs live, what they record and which
  checkpoint `best`/`last` mean, W&B tracking, k-fold;
- `lab/`, the lecture lab's optional analyses.
"""
import importlib

#: Modules that moved into cli/, runs/ and lab/, by their old names: a config.yaml saved before the move names
#: e.g. `homework.tracking.WandbLogger`, which jsonargparse finds as an attribute of this package.
MOVED = {"tracking": "homework.runs.tracking", "checkpoints": "homework.runs.checkpoints",
         "kfold": "homework.runs.kfold", "advisor": "homework.lab.advisor", "critical": "homework.lab.critical",
         "compare": "homework.lab.compare", "tuning": "homework.lab.finders"}


#: The Python API's names, importable from the package (`from homework import hw1, HomeworkError`) without
#: `import homework` loading torch.
API = ("HomeworkError", "Result")


def __getattr__(name: str):
    if name in MOVED:
        return importlib.import_module(MOVED[name])
    if name in API:
        return getattr(importlib.import_module("homework.cli.api"), name)
    raise AttributeError(f"module 'homework' has no attribute {name!r}")
