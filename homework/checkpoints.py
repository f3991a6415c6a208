"""A checkpoint given to `--ckpt_path`: readable, trained by this homework, and the data settings
that come back from it (so `predict` preprocesses exactly as the model was trained)."""

from pathlib import Path

import torch
from jsonargparse import Namespace

from datamodules.base import DataError


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated download, a file that is no checkpoint, ...
        raise DataError(f"--ckpt_path {path}: not a readable checkpoint ({type(err).__name__})") from None


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def check_homework(checkpoint: dict, path: Path, homework: str, model_class: type) -> None:
    """One line, before LightningCLI tries (and fails, in 98 lines) to fit another homework's settings."""
    trained_by = checkpoint.get("homework")  # written by models.base.BaseTask
    if trained_by is not None and trained_by != homework:
        raise DataError(f"{path}: this checkpoint was trained by {trained_by}, not {homework}; "
                        f"use python homework/{trained_by}.py with it")
    saved_model = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if saved_model is not None and saved_model != class_path(model_class):
        raise DataError(f"{path}: this checkpoint holds a {saved_model.rsplit('.', 1)[-1]} model, "
                        f"not {homework}'s {model_class.__name__}")


def restore_data_settings(checkpoint: dict, data: Namespace, runtime_args: tuple[str, ...]) -> None:
    """Data settings come from the checkpoint (LightningCLI restores only the model's), except the
    `runtime_args` given on this command line (where the data is, batch size, workers, ...)."""
    for key, value in checkpoint.get("datamodule_hyper_parameters", {}).items():
        if key.startswith("_") or key not in data:
            continue
        if key not in runtime_args or data[key] is None:
            data[key] = value
