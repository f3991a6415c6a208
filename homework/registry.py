"""The homeworks there are, found from their entry points: every `homework/hwN.py` is one.

Every list of homeworks outside one homework's own files reads this module (the tests, the notebook
generator, the benchmarks, the README check), so adding a homework is its own files plus one README row.
What a homework declares beside its recipe, the registry reads from the same place:

    homework/hwN.py                  the entry point (its `HOMEWORK`, `main` and the API's functions)
    homework/configs/hwN.yaml        the default recipe
    homework/configs/hwN_tiny.yaml   the smallest model and shortest run that still takes every path
                                     (what the shared tests, notebooks tests and DDP tests run)
    homework/configs/hwN_space.yaml  the `tune` search space

Nothing here imports torch until a homework's module is asked for.
"""
import importlib
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import yaml

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
ENTRY = re.compile(r"^hw(\d+)\.py$")


def names() -> list[str]:
    """`["hw1", "hw2", ...]`, in course order (hw10 after hw9)."""
    found = [(int(m.group(1)), p.stem) for p in HERE.iterdir() if (m := ENTRY.match(p.name))]
    return [name for _, name in sorted(found)]


def module(name: str) -> ModuleType:
    """The homework's entry point module, `homework.hwN` (loads torch and the homework's code)."""
    if name not in names():
        raise KeyError(f"no homework {name!r}; there are {', '.join(names())}")
    return importlib.import_module(f"homework.{name}")


def config(name: str, kind: str = "") -> Path:
    """One of a homework's config files: its recipe (`kind=""`), `"tiny"`, `"space"`, `"sample"`."""
    return CONFIGS / (f"{name}_{kind}.yaml" if kind else f"{name}.yaml")


@cache
def tiny(name: str) -> tuple[str, ...]:
    """The homework's tiny recipe as command-line options, `("--data.batch_size", "8", ...)`: later options win,
    so a test adds its own after these."""
    path = config(name, "tiny")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: every homework declares its tiny test recipe there")
    return tuple(flatten(yaml.safe_load(path.read_text()) or {}))


def flatten(tree: dict, prefix: str = "--") -> list[str]:
    """`{"data": {"batch_size": 8}}` -> `["--data.batch_size", "8"]` (lists and nulls as YAML writes them)."""
    args: list[str] = []
    for key, value in tree.items():
        if isinstance(value, dict) and "class_path" not in value:
            args += flatten(value, f"{prefix}{key}.")
        else:
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
            args += [f"{prefix}{key}", text.removesuffix("\n...").strip()]
    return args
