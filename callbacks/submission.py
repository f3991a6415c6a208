"""Kaggle submission export shared by every homework: a validated CSV (or, for HW5, a text file of lines)."""

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


class SubmissionFormat(Protocol):
    """What a DataModule tells the writer about its output file.

    `to_submission` returns a DataFrame (a CSV with `submission_columns`) or a list of lines (a text
    file, one line per test sample; `submission_columns` is then None). `kaggle_competition` None: the
    file is not submitted to Kaggle (HW5 is graded by BLEU), so no submit command is printed.
    """

    submission_filename: str
    kaggle_competition: str | None

    def collate_predictions(self, batches: list) -> Any: ...

    def to_submission(self, predictions: Any) -> "pandas.DataFrame | list[str]": ...

    @property
    def num_test_samples(self) -> int: ...

    @property
    def submission_columns(self) -> list[str] | None: ...


class SubmissionError(Exception):
    """The predictions do not make a valid Kaggle file; nothing was written."""


def validate_submission(frame: "pandas.DataFrame | list[str]", columns: list[str] | None, num_rows: int) -> None:
    """Raise SubmissionError unless `frame` has exactly `columns`, `num_rows` rows and no missing value
    (or, as a list of lines, `num_rows` lines, none with a line break inside)."""
    if isinstance(frame, list):
        if len(frame) != num_rows:
            raise SubmissionError(f"{len(frame)} lines, but the test set has {num_rows}")
        broken = next((i for i, line in enumerate(frame) if "\n" in line or "\r" in line), None)
        if broken is not None:
            raise SubmissionError(f"prediction {broken} holds a line break, which would shift every later line")
        return
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


def write_atomically(frame: "pandas.DataFrame | list[str]", path: Path) -> None:
    """Write a CSV (or lines of text) through a temp file + rename, so an interrupted export never
    leaves a truncated file. The file gets the usual permissions (mkstemp's are owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            if isinstance(frame, list):
                f.writelines(line + "\n" for line in frame)
            else:
                frame.to_csv(f, index=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KaggleSubmissionWriter(BasePredictionWriter):
    """Writes the homework's Kaggle file at the end of `predict`, validated and atomically.

    The format (file name, header, ids) comes from the DataModule, so this one callback serves
    every homework.

    Args:
        output_dir: Folder to write to; None: the run directory of the checkpoint that made the predictions.
        filename: File name; None: the homework's (pred.csv, submission.csv, ...).
    """

    def __init__(self, output_dir: str | None = None, filename: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.filename = filename
        self.written_path: Path | None = None
        self.summary: str | None = None
        self.replaced = False

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
        if datamodule is not None and hasattr(datamodule, "to_submission"):
            self.write(trainer, datamodule, datamodule.collate_predictions(predictions))

    def write(self, trainer: pl.Trainer, datamodule: SubmissionFormat, predictions: Any) -> None:
        """Validate and write the file for `predictions` (as `collate_predictions` returns them)."""
        if not trainer.is_global_zero:
            return
        frame = datamodule.to_submission(predictions)
        path = self.output_path(trainer, datamodule)
        try:
            validate_submission(frame, datamodule.submission_columns, datamodule.num_test_samples)
        except SubmissionError as err:
            raise SubmissionError(f"{path.name} not written: {err}") from None
        self.replaced = path.exists()
        write_atomically(frame, path)
        self.written_path = path
        self.summary = self.describe(path, len(frame), datamodule.kaggle_competition,
                                     getattr(datamodule, "is_demo", False))

    def describe(self, path: Path, rows: int, competition: str | None, demo: bool) -> str:
        """What was written and what to do with it: the CLI prints it once the progress bar is gone."""
        what = "Kaggle submission" if competition and not demo else "predictions"
        lines = [f"Wrote {what} {path} ({rows} {'rows' if competition else 'lines'})"
                 + (", replacing the previous one" if self.replaced else "")]
        if demo:
            lines.append("(made from the generated demo data: nothing to submit to Kaggle)")
        elif competition:
            lines.append(f"Next: kaggle competitions submit -c {competition} -f {path} -m 'my submission'")
        return "\n".join(lines)
