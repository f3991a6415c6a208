"""A checkpoint given to `--ckpt_path`: readable, trained by this homework, and the data settings
that come back from it (so `predict` preprocesses exactly as the model was trained); and, once the
data is read, a model that fits it (`check_data`)."""

from pathlib import Path

import torch
from jsonargparse import Namespace

from datamodules.errors import DataError
from models.base import plain
from homework.command_line import command

#: What Lightning writes in every checkpoint: a file without it was not saved by `fit`.
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")


def load(path: Path) -> dict:
    """The checkpoint's contents, or one line saying why `path` is not a checkpoint `fit` wrote."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated download, a file that is no checkpoint, ...
        try:
            with open(path, "rb") as f:
                zipped = f.read(4) == b"PK\x03\x04"  # how every file torch.save writes begins
        except OSError:  # unreadable (permissions): the exception's name says so
            zipped = False
        why = ("cut short or damaged (an interrupted copy or download?)" if zipped
               else "not a file torch.save wrote")
        raise DataError(f"--ckpt_path {path}: not a readable checkpoint: {why} ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict):
        raise DataError(f"--ckpt_path {path}: holds a {type(checkpoint).__name__}, not a checkpoint; pass a .ckpt "
                        f"file from a run's checkpoints/ folder (or best / last)")
    if not all(key in checkpoint for key in LIGHTNING_KEYS):
        raise DataError(f"--ckpt_path {path}: not a checkpoint of this project (no {LIGHTNING_KEYS[1]}: a bare "
                        f"state_dict, as the course's sample code saves, has no settings to rebuild the model); "
                        f"train with `fit` and pass a .ckpt file from the run's checkpoints/ folder")
    return checkpoint


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def check_homework(checkpoint: dict, path: Path, homework: str, model_class: type) -> None:
    """One line, before LightningCLI tries (and fails, in 98 lines) to fit another homework's settings."""
    trained_by = checkpoint.get("homework")  # written by models.base.BaseTask
    if trained_by is not None and trained_by != homework:
        raise DataError(f"{path}: this checkpoint was trained by {trained_by}, not {homework}; "
                        f"use {command(trained_by)} with it")
    saved_model = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if saved_model is not None and saved_model != class_path(model_class):
        raise DataError(f"{path}: this checkpoint holds a {saved_model.rsplit('.', 1)[-1]} model, "
                        f"not {homework}'s {model_class.__name__}")


def restore_data_settings(checkpoint: dict, data: Namespace, runtime_args: tuple[str, ...],
                          given: frozenset[str] | set[str] = frozenset(), path: str | Path | None = None) -> None:
    """Data settings come from the checkpoint (LightningCLI restores only the model's), except the
    `runtime_args` given on this command line (where the data is, batch size, workers, ...). A setting in
    `given` (named on the command line) that the checkpoint has otherwise is an error, not silently replaced."""
    for key, value in checkpoint.get("datamodule_hyper_parameters", {}).items():
        if key.startswith("_") or key not in data:
            continue
        if key not in runtime_args or data[key] is None:
            if key in given and data[key] is not None and plain(data[key]) != plain(value):
                raise DataError(f"--data.{key} {data[key]}: the model in {path or 'the checkpoint'} was trained with "
                                f"{key} {value}, and works only with the data settings it was trained with; "
                                f"leave --data.{key} out")
            data[key] = value
