"""What a homework command does before it loads torch, Lightning and the homework's code (several seconds).

An entry point imports this module first. Until its `Homework` is made (all imports done), a Ctrl-C ends in one
line instead of Python's traceback through torch's import machinery; the process then ends as Python ends one
interrupted by Ctrl-C (by SIGINT: a shell shows exit code 130). After that, the command's own handling takes over
(`main.run`: what was kept, exit code 130; 143 after SIGTERM).
"""
import importlib.util
import sys
from pathlib import Path

_before = sys.excepthook

#: the modules of setup.cfg's install_requires: one missing (a checkout run before `pip install -e .`, a kernel with
#: Lightning but not the rest) is one line saying what to run, not an import traceback from deep inside a command
REQUIRED = {"torch": "torch", "torchvision": "torchvision", "pytorch_lightning": "pytorch-lightning",
            "jsonargparse": "jsonargparse", "torchmetrics": "torchmetrics", "wandb": "wandb", "pandas": "pandas",
            "sklearn": "scikit-learn", "matplotlib": "matplotlib", "PIL": "pillow", "sentencepiece": "sentencepiece",
            "sacrebleu": "sacrebleu", "filelock": "filelock", "optuna": "optuna", "numpy": "numpy", "yaml": "PyYAML",
            "tqdm": "tqdm", "scipy": "scipy", "threadpoolctl": "threadpoolctl", "cv2": "opencv-python-headless"}


def check_installed() -> None:
    """Exit with one `error:` line (code 2) when a dependency of the project is not installed here."""
    missing = [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        project = Path(__file__).resolve().parents[2]
        print(f"error: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed in this Python "
              f"({sys.executable}): run `pip install -e .` in {project} (in a notebook: !pip install -e .), which "
              f"installs the project's dependencies and keeps the torch already installed", file=sys.stderr)
        raise SystemExit(2)


def _one_line(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.stdout.flush()
        print("Interrupted (Ctrl-C) while starting; nothing was written", file=sys.stderr)
    else:
        _before(kind, value, traceback)


def loaded() -> None:
    """Everything is imported: Python's own handling of an uncaught exception is back."""
    if sys.excepthook is _one_line:
        sys.excepthook = _before


sys.excepthook = _one_line
check_installed()
