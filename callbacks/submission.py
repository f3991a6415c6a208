"""Kaggle submission export shared by every homework: a validated CSV (or, for HW5, a text file of lines)."""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler, UnrepeatedDistributedSamplerWrapper
from torch.utils.data import DistributedSampler

from datamodules import outputs
from datamodules.atomic import write_atomically

if TYPE_CHECKING:
    import pandas

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


def write_submission(frame: "pandas.DataFrame | list[str]", path: Path) -> None:
    """The Kaggle file as text (a CSV, or one line per prediction), written atomically (`datamodules.atomic`):
    an interrupted export never leaves a truncated file."""
    if isinstance(frame, list):
        text = "".join(line + "\n" for line in frame)
    else:
        text = frame.to_csv(index=False, lineterminator="\n")
    write_atomically(path, text)


def _rows(output: Any, n: int) -> list:
    """A batch's prediction split into `n` one-row predictions of the same kind (a tensor, a dict of them, a list)."""
    if isinstance(output, torch.Tensor) and len(output) == n:
        return list(output.split(1))
    if isinstance(output, list) and len(output) == n:
        return [[item] for item in output]
    if isinstance(output, dict):
        columns = {key: _rows(value, n) for key, value in output.items()}
        return [{key: rows[i] for key, rows in columns.items()} for i in range(n)]
    raise SubmissionError(f"cannot split a {type(output).__name__} prediction of a {n}-sample batch by sample to "
                          f"put several processes' predictions in order")


def _batch_positions(trainer: pl.Trainer, num_batches: int) -> list[int]:
    """Where this process's predict batches stand in the sequence one process predicts: a loader that yields
    whole batches (`batch_size=None`) has its batches dealt out round-robin by Lightning's distributed sampler."""
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, UnrepeatedDistributedSamplerWrapper):
        positions = list(UnrepeatedDistributedSampler.__iter__(sampler))
    elif isinstance(sampler, (DistributedSamplerWrapper, DistributedSampler)):  # padded: repeats dropped later
        positions = list(DistributedSampler.__iter__(sampler))
    else:
        raise SubmissionError(f"cannot tell which samples this process predicted (a {type(sampler).__name__} "
                              f"sampler), so the processes' predictions cannot be put in order")
    if len(positions) != num_batches:
        raise SubmissionError(f"this process predicted {num_batches} batches, but its sampler dealt it "
                              f"{len(positions)}; the processes' predictions cannot be put in order")
    return positions


def gather_predictions(trainer: pl.Trainer, predictions: list, batch_indices: list) -> list:
    """Every process's predict outputs, in the order one process makes them: what `collate_predictions` expects.

    Under DDP each process predicts its share: Lightning's sampler deals the loader's items out round-robin
    (`UnrepeatedDistributedSamplerWrapper`). Where the items are whole batches (`batch_size=None`: HW1, HW2,
    HW4, HW5), each batch is put back at its position, so `collate_predictions` sees the very batches one
    process would. Where the loader batches samples itself (HW3), batches mix samples from all over the set,
    so each row goes back to its dataset index (Lightning's `batch_indices`). Repeats (a padding sampler)
    are dropped. With one process this returns `predictions` as they are.
    """
    if trainer.world_size == 1:
        return predictions
    indices = batch_indices[0] if batch_indices else []  # (one predict loader: Lightning's list per loader)
    if indices and len(indices) == len(predictions):
        keyed = [(index, row) for batch, rows in zip(predictions, indices)
                 for index, row in zip(rows, _rows(batch, len(rows)))]
    else:
        keyed = list(zip(_batch_positions(trainer, len(predictions)), predictions))
    gathered: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, keyed)
    ordered: dict[int, Any] = {}
    for key, item in sorted((pair for part in gathered for pair in part), key=lambda pair: pair[0]):
        ordered.setdefault(key, item)
    return list(ordered.values())


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
        self.kept: Path | None = None  # a file at the default name, made from other inputs, left alone
        self.hold = False  # keep the predictions in `held` instead of writing them (k-fold averaging)
        self.held: Any = None

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
        if datamodule is None or not hasattr(datamodule, "to_submission"):  # never a predict that writes nothing
            raise SubmissionError(f"nothing written: predicting without a homework's DataModule "
                                  f"({type(datamodule).__name__}), the writer knows no file format")
        batches = gather_predictions(trainer, predictions, batch_indices)  # (a collective: every process calls it)
        if self.hold:  # (in every process, so all of them agree on what comes next)
            self.held = datamodule.collate_predictions(batches)
        elif trainer.is_global_zero:
            self.write(trainer, datamodule, datamodule.collate_predictions(batches))

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
        source = str(Path(getattr(datamodule, "data_dir", "")).resolve())
        # never a file this project did not write from these inputs (datamodules/outputs.py): the default name
        # goes beside such a file, a name the user chose is refused
        chosen = path
        path = outputs.target(path, source, "--submission.filename" if self.filename is not None else None)
        self.kept = chosen if path != chosen else None
        self.replaced = path.exists()
        write_submission(frame, path)
        outputs.remember(path, source)
        self.written_path = path
        self.summary = self.describe(path, len(frame), datamodule.kaggle_competition,
                                     getattr(datamodule, "is_demo", False))

    def describe(self, path: Path, rows: int, competition: str | None, demo: bool) -> str:
        """What was written and what to do with it: the CLI prints it once the progress bar is gone."""
        what = "Kaggle submission" if competition and not demo else "predictions"
        lines = [f"Wrote {what} {path} ({rows} {'rows' if competition else 'lines'})"
                 + (", replacing the previous one (same inputs)" if self.replaced else "")
                 + (outputs.kept(self.kept, path).replace(" (", "; ", 1).removesuffix(")") if self.kept else "")]
        if demo:
            lines.append("(made from the generated demo data: nothing to submit to Kaggle)")
        elif competition:
            lines.append(f"Next: kaggle competitions submit -c {competition} -f {path} -m 'my submission'")
        return "\n".join(lines)
