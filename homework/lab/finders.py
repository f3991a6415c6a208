"""Lightning's learning-rate and batch-size finders, one flag away: `fit --find_lr` / `fit --find_batch_size`
(and `fit --plot_schedule`, the configured schedule over the whole fit) run instead of training, save the plot in the run directory and print the command that trains with the
result. (Not applied silently: the range test's suggestion is a heuristic, to be checked against the plot, and
the batch size changes the optimization too, as the course's batch-size lecture shows.)"""

import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

from datamodules.errors import DataError


def find_lr(trainer: pl.Trainer, model: pl.LightningModule, datamodule, run_dir: Path) -> tuple[float, Path]:
    """The learning-rate range test (Smith 2017): over 100 optimizer steps the learning rate grows
    exponentially from 1e-8 to 1 while the (smoothed) training loss is recorded; Lightning suggests the
    learning rate where the loss falls fastest. Weights are restored afterwards."""
    if not model.automatic_optimization:
        raise DataError("--find_lr records the loss of every optimizer step: add --data.minibatches_per_step 1")
    with progress_bar_only_on_a_terminal():
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


@contextmanager
def progress_bar_only_on_a_terminal():
    """Lightning's range test draws a tqdm bar of its own, with no option to turn it off: piped to a log it
    is carriage-return fragments that the result line then shares. There, one line says what runs instead."""
    from pytorch_lightning.tuner import lr_finder

    if sys.stderr.isatty():
        yield
        return
    print("Learning-rate range test: 100 training steps, the learning rate growing from 1e-8 to 1 ...",
          file=sys.stderr, flush=True)
    drawn = lr_finder.tqdm
    lr_finder.tqdm = partial(drawn, disable=True)
    try:
        yield
    finally:
        lr_finder.tqdm = drawn


def find_batch_size(trainer: pl.Trainer, model: pl.LightningModule, datamodule) -> int:
    """The largest batch size that fits in memory: doubling from the configured one, a few steps each, until
    out of memory (on a CPU: until the training set). Weights are restored afterwards."""
    if "batch_size" not in datamodule.hparams:
        raise DataError(f"--find_batch_size: {type(datamodule).__name__} has no batch_size to tune")
    return Tuner(trainer).scale_batch_size(model, datamodule=datamodule, mode="power", max_trials=12)


def plot_schedule(trainer: pl.Trainer, model: pl.LightningModule, datamodule, run_dir: Path) -> Path:
    """Build the fit as configured, draw its learning-rate schedule (`schedule.png`) and stop before training."""
    path = run_dir / "schedule.png"
    trainer.callbacks.append(PlotSchedule(path))
    try:
        trainer.fit(model, datamodule=datamodule)
    except _SchedulePlotted:
        pass
    return path


def run(trainer: pl.Trainer, model: pl.LightningModule, datamodule, run_dir: Path, lr: bool, batch_size: bool,
        command: str, schedule: bool = False) -> None:
    """Run the finders asked for, say what they found and the command that trains with it."""
    flags = []
    if schedule:
        print(f"Learning-rate schedule over the whole fit: {plot_schedule(trainer, model, datamodule, run_dir)}")
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
    print(f"Run directory: {run_dir}\nNext: {' '.join([command, *flags])}")


class _SchedulePlotted(Exception):
    """Raised once the schedule is drawn: `fit --plot_schedule true` trains nothing."""


class PlotSchedule(pl.Callback):
    """Draws the configured learning-rate schedule over every optimizer step of the planned fit, before it
    trains (`fit --plot_schedule true`): the optimizer and schedule are built as the fit builds them, on a
    stand-in parameter, and stepped through the fit's length."""

    def __init__(self, path: Path) -> None:
        self.path, self.lrs = path, []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch

        from callbacks.plots import pyplot

        total = int(pl_module.total_optimizer_steps())
        if total > 10_000_000:
            raise DataError(f"--plot_schedule: {total} optimizer steps; set --trainer.max_epochs or max_steps")
        probe = torch.nn.Parameter(torch.zeros(1))
        optimizer = pl_module.optimizer([probe])
        configs = trainer.lr_scheduler_configs
        scheduler = pl_module.lr_scheduler(optimizer) if pl_module.lr_scheduler is not None else None
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise DataError("--plot_schedule: ReduceLROnPlateau follows the validation metric, so its schedule is "
                            "known only after training (learning_curve.png draws it)")
        if scheduler is not None and hasattr(scheduler, "set_total_steps"):
            scheduler.set_total_steps(configs[0].scheduler.total_steps)  # as the fit spans it
        per_step = not configs or configs[0].interval == "step"
        per_epoch = total / max(trainer.max_epochs, 1) if trainer.max_epochs not in (None, -1) else total
        lrs = []
        for step in range(total):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None and (per_step or int((step + 1) % per_epoch) == 0):
                scheduler.step()
        self.lrs = lrs
        plt = pyplot()
        figure, axes = plt.subplots(figsize=(8, 3.5))
        axes.plot(range(total), lrs, color="tab:purple")
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("learning rate")
        name = type(scheduler).__name__ if scheduler is not None else "constant"
        axes.set_title(f"{type(optimizer).__name__} with {name}: {total} steps "
                       f"({trainer.max_epochs} epochs), peak lr {max(lrs):.3g}")
        axes.grid(alpha=0.3)
        if trainer.max_epochs not in (None, -1):
            epochs = axes.secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
            epochs.set_xlabel("epoch")
        figure.savefig(self.path, dpi=120, bbox_inches="tight")
        plt.close(figure)
        raise _SchedulePlotted
