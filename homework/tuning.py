"""Lightning's learning-rate and batch-size finders, one flag away: `fit --find_lr` / `fit --find_batch_size`
run them instead of training, save the plot in the run directory and print the command that trains with the
result. (Not applied silently: the range test's suggestion is a heuristic, to be checked against the plot, and
the batch size changes the optimization too, as the course's batch-size lecture shows.)"""

import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

from datamodules.base import DataError


def find_lr(trainer: pl.Trainer, model: pl.LightningModule, datamodule, run_dir: Path) -> tuple[float, Path]:
    """The learning-rate range test (Smith 2017): over 100 optimizer steps the learning rate grows
    exponentially from 1e-8 to 1 while the (smoothed) training loss is recorded; Lightning suggests the
    learning rate where the loss falls fastest. Weights are restored afterwards."""
    if not model.automatic_optimization:
        raise DataError("--find_lr records the loss of every optimizer step: add --data.minibatches_per_step 1")
    finder = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    plot = run_dir / "lr_find.png"
    if finder is not None:
        figure = finder.plot(suggest=suggestion is not None)
        figure.axes[0].set_title("Learning-rate range test: the training loss as the learning rate grows")
        figure.savefig(plot, dpi=120, bbox_inches="tight")
    if suggestion is None:
        raise DataError(f"--find_lr: the loss did not fall over the range tried, so there is no suggestion "
                        f"(plot: {plot}); pick --model.optimizer.lr by hand")
    return suggestion, plot


def find_batch_size(trainer: pl.Trainer, model: pl.LightningModule, datamodule) -> int:
    """The largest batch size that fits in memory: doubling from the configured one, a few steps each, until
    out of memory (on a CPU: until the training set). Weights are restored afterwards."""
    if "batch_size" not in datamodule.hparams:
        raise DataError(f"--find_batch_size: {type(datamodule).__name__} has no batch_size to tune")
    return Tuner(trainer).scale_batch_size(model, datamodule=datamodule, mode="power", max_trials=12)


def run(trainer: pl.Trainer, model: pl.LightningModule, datamodule, run_dir: Path, lr: bool, batch_size: bool,
        command: str) -> None:
    """Run the finders asked for, say what they found and the command that trains with it."""
    flags = []
    if batch_size:
        size = find_batch_size(trainer, model, datamodule)
        print(f"Batch-size finder: {size} is the largest batch that fits in memory (a larger batch also changes "
              f"the optimization: fewer, less noisy steps per epoch)")
        flags.append(f"--data.batch_size {size}")
    if lr:
        suggestion, plot = find_lr(trainer, model, datamodule, run_dir)
        print(f"Learning-rate finder: the loss fell fastest at lr {suggestion:.3g}; check it on the plot, "
              f"{plot} (somewhat below the loss's minimum is the usual choice)")
        flags.append(f"--model.optimizer.lr {suggestion:.3g}")
    print(f"Run directory: {run_dir}\nNext: {command} {' '.join(flags)}", file=sys.stdout)
