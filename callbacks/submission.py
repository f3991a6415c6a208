"""Kaggle submission export shared by every homework."""

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


class SubmissionFormat(Protocol):
    """What a DataModule tells the writer about its Kaggle file."""

    submission_filename: str
    kaggle_competition: str

    def to_submission(self, predictions: torch.Tensor) -> pd.DataFrame: ...

    @property
    def num_test_samples(self) -> int: ...

    @property
    def submission_columns(self) -> list[str]: ...


class SubmissionError(Exception):
    """The predictions do not make a valid Kaggle file; nothing was written."""


def validate_submission(frame: pd.DataFrame, columns: list[str], num_rows: int) -> None:
    """Raise SubmissionError unless `frame` has exactly `columns`, `num_rows` rows and no missing value."""
    if list(frame.columns) != list(columns):
        raise SubmissionError(f"header is {list(frame.columns)}, Kaggle expects {list(columns)}")
    if len(frame) != num_rows:
        raise SubmissionError(f"{len(frame)} rows, but the test set has {num_rows}")
    if frame.isna().any().any():
        bad = frame.columns[frame.isna().any()].tolist()
        raise SubmissionError(f"missing (NaN) values in column(s) {bad}")
    numeric = frame.select_dtypes("number")
    if len(numeric.columns) and not np.isfinite(numeric.to_numpy(dtype=float)).all():
        raise SubmissionError("infinite values in the predictions")


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV through a temp file + rename, so an interrupted export never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            frame.to_csv(f, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KaggleSubmissionWriter(BasePredictionWriter):
    """Writes the homework's Kaggle file at the end of `predict`, validated and atomically.

    The format (file name, header, ids) comes from the DataModule, so this one callback serves
    every homework. `output_dir=None` puts the file in the run directory of the checkpoint
    that made the predictions (or `trainer.default_root_dir` without one).
    """

    def __init__(self, output_dir: str | None = None, filename: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.filename = filename
        self.written_path: Path | None = None

    def output_path(self, trainer: pl.Trainer, datamodule: SubmissionFormat) -> Path:
        if self.output_dir is not None:
            directory = Path(self.output_dir)
        elif trainer.ckpt_path:
            directory = Path(trainer.ckpt_path).resolve().parent
            if directory.name == "checkpoints":  # <run>/checkpoints/x.ckpt -> <run>
                directory = directory.parent
        else:
            directory = Path(trainer.default_root_dir)
        return directory / (self.filename or datamodule.submission_filename)

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or datamodule is None or not hasattr(datamodule, "to_submission"):
            return
        frame = datamodule.to_submission(torch.cat([p.detach().cpu() for p in predictions]))
        path = self.output_path(trainer, datamodule)
        try:
            validate_submission(frame, datamodule.submission_columns, datamodule.num_test_samples)
        except SubmissionError as err:
            raise SubmissionError(f"{path.name} not written: {err}") from None
        write_atomically(frame, path)
        self.written_path = path
        print(f"Wrote Kaggle submission {path} ({len(frame)} rows). Submit it with:\n"
              f"  kaggle competitions submit -c {datamodule.kaggle_competition} -f {path} -m 'my submission'")
