"""Lightning's learning-rate and batch-size finders, one flag away: `fit --find_lr` / `fit --find_batch_size` (and `fit
--plot_schedule`, the configured schedule over the whole fit) run instead of training, save the plot in the run
directory and print the command that trains with the result. (Not applied silently: the range test's suggestion is a
heuristic, to be checked against the plot, and the batch size changes the optimization too, as the course's
batch-size lecture shows.)"""

import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

from adapters import lr_finder_without_progress_bar

from datamodules import outputs
from datamodules.console import redraws
from datamodules.errors import DataError


#: The suggestion rule's constants (see `suggest_lr`).
SMOOTHING = 0.1  # the centred moving average spans this share of the recorded steps
CLEAR_FALL = 0.10  # a falling stretch must take the smoothed loss down by 10% of its value at its top
MIN_STRETCH = 5  # ... over at least this many recorded steps
STRETCH_ENDS = (0.1, 0.9)  # the stretch runs from where 10% of that fall is done to where 90% is


@dataclass
class LrSuggestion:
    """The suggested learning rate (None: the curve has no clear falling stretch) and the stretch it comes from."""

    lr: float | None
    reason: str  # how it was picked, or why there is none
    start: float = math.nan  # the falling stretch's learning rates and smoothed losses at its ends
    end: float = math.nan
    high: float = math.nan
    low: float = math.nan


def smoothed(losses: np.ndarray) -> np.ndarray:
    """A centred moving average over SMOOTHING of the points (shorter at the ends)."""
    half = max(1, int(SMOOTHING * len(losses)) // 2)
    kernel = np.ones(2 * half + 1)
    padded = np.convolve(np.ones_like(losses), kernel, "same")
    return np.convolve(losses, kernel, "same") / padded


def suggest_lr(lrs, losses) -> LrSuggestion:
    """The middle (on the log scale) of the falling stretch of the smoothed loss curve: its deepest fall from
    an earlier top, trimmed to where 10%..90% of that fall happens. (The deepest fall, not the lowest point:
    the running average starts at the first batch's loss, which may lie below everything after it.)

    Why not Lightning's `suggestion()`: it takes the steepest slope of the loss with respect to the learning
    rate itself, not its logarithm, after skipping 10 steps; the first steps' learning rates are ~1e-8 apart,
    so a wiggle of a noisy loss there (HW1's minibatches differ a lot, and the running average starts from
    the first batch's loss) is the "steepest" point, even on a rising stretch (HW1's demo: 2.75e-07). The
    middle of the stretch where the loss clearly falls is where training makes progress and stays a safe
    distance below the lowest point, beyond which it diverges (fastai's "valley" rule is the same idea)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    keep = np.isfinite(losses) & np.isfinite(lrs)
    lrs, losses = lrs[keep], losses[keep]
    if len(losses) < 2 * MIN_STRETCH:
        return LrSuggestion(None, f"only {len(losses)} steps recorded, too few to see a falling stretch")
    curve = smoothed(losses)
    lowest = int(np.argmax(np.maximum.accumulate(curve) - curve))  # the deepest fall below an earlier top
    top = int(np.argmax(curve[:lowest + 1]))
    high, low = curve[top], curve[lowest]
    if lowest - top < MIN_STRETCH or high - low < CLEAR_FALL * abs(high):
        return LrSuggestion(None, f"the smoothed loss has no clear falling stretch (it falls at most "
                                  f"{(high - low) / abs(high):.0%} of its value, over {lowest - top} steps)")
    fall = high - low
    start = top + int(np.argmax(curve[top:lowest + 1] <= high - STRETCH_ENDS[0] * fall))
    end = start + int(np.argmax(curve[start:lowest + 1] <= high - STRETCH_ENDS[1] * fall))
    lr = float(np.sqrt(lrs[start] * lrs[end]))
    return LrSuggestion(lr, "the middle (log scale) of the falling stretch", float(lrs[start]), float(lrs[end]),
                        float(curve[start]), float(curve[end]))


def find_lr(trainer: pl.Trainer, model: pl.LightningModule, datamodule, run_dir: Path) -> tuple[LrSuggestion, Path]:
    """The learning-rate range test (Smith 2017), run by Lightning's Tuner: over 100 optimizer steps the
    learning rate grows exponentially from 1e-8 to 1 while the (running-average) training loss is recorded
    (over as many epochs as that takes: `--trainer.max_epochs` is the planned fit's). Weights are restored.
    The suggestion is `suggest_lr`'s, drawn and explained in lr_find.png."""
    if not model.automatic_optimization:
        raise DataError("--find_lr records the loss of every optimizer step: add --data.minibatches_per_step 1")
    epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = -1  # the test is its 100 steps, however few epochs the planned fit has
    try:
        with progress_bar_only_on_a_terminal():
            finder = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False)
    finally:
        trainer.fit_loop.max_epochs = epochs
    if finder is None:
        raise DataError("--find_lr: the range test recorded nothing (no training batches?)")
    lrs, losses = finder.results["lr"], finder.results["loss"]
    suggestion = suggest_lr(lrs, losses)
    chosen = run_dir / "lr_find.png"
    plot = plot_lr_finder(lrs, losses, suggestion, chosen, str(run_dir.resolve()))
    return suggestion, plot


@contextmanager
def progress_bar_only_on_a_terminal():
    """Lightning's range test draws a tqdm bar of its own, with no option to turn it off: piped to a log it
    is carriage-return fragments that the result line then shares (in a notebook too). There, one line says what
    runs instead."""
    if redraws():
        yield
        return
    print("Learning-rate range test: 100 training steps, the learning rate growing from 1e-8 to 1 ...",
          file=sys.stderr, flush=True)
    with lr_finder_without_progress_bar():
        yield


def plot_lr_finder(lrs, losses, suggestion: LrSuggestion, path: Path, inputs: str = "") -> Path:
    """The range test's curve, the smoothed curve the rule reads, the falling stretch and the suggestion; saved by
    the output rule (datamodules/outputs.py): returns where it went."""
    from callbacks.plots import pyplot

    plt = pyplot()
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    keep = np.isfinite(losses)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    ax.plot(lrs[keep], losses[keep], color="tab:blue", alpha=0.45, linewidth=1,
            label="training loss, each step (Lightning's running average)")
    if keep.sum() >= 3:
        ax.plot(lrs[keep], smoothed(losses[keep]), color="tab:blue", linewidth=2,
                label=f"smoothed further (centred average over {SMOOTHING:.0%} of the steps)")
    s = suggestion
    if s.lr is not None:
        ax.axvspan(s.start, s.end, color="tab:green", alpha=0.15,
                   label=f"falling stretch: lr {s.start:.2g} to {s.end:.2g} "
                         f"(smoothed loss {s.high:.3g} -> {s.low:.3g})")
        at = float(np.interp(np.log(s.lr), np.log(lrs[keep]), smoothed(losses[keep])))
        ax.plot([s.lr], [at], "o", color="tab:red", markersize=8, zorder=5,
                label=f"suggested lr {s.lr:.3g}: the middle of the falling stretch (log scale)")
        title = f"Learning-rate range test: suggested lr {s.lr:.3g}"
    else:
        title = "Learning-rate range test: no clear falling stretch, no suggestion"
        ax.plot([], [], " ", label=s.reason)
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate (log scale; one optimizer step each, {len(lrs)} steps)")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8.5, frameon=False)
    path = outputs.save_figure(fig, path, inputs, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def find_batch_size(trainer: pl.Trainer, model: pl.LightningModule, datamodule) -> int:
    """The largest batch size that fits in memory: doubling from the configured one, a few steps each, until
    out of memory (on a CPU: until the training set). Weights are restored afterwards."""
    if "batch_size" not in datamodule.hparams:
        raise DataError(f"--find_batch_size: {type(datamodule).__name__} has no batch_size to tune")
    return Tuner(trainer).scale_batch_size(model, datamodule=datamodule, mode="power", max_trials=12)


def plot_schedule(trainer: pl.Trainer, model: pl.LightningModule, datamodule, run_dir: Path) -> Path:
    """Build the fit as configured, draw its learning-rate schedule (`schedule.png`) and stop before training."""
    plotter = PlotSchedule(run_dir / "schedule.png")
    trainer.callbacks.append(plotter)
    try:
        trainer.fit(model, datamodule=datamodule)
    except _SchedulePlotted:
        pass
    return plotter.path  # (where it went: beside a file in its way, see datamodules/outputs.py)


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
        if suggestion.lr is None:
            print(f"Learning-rate finder: {suggestion.reason}, so no learning rate is suggested; read the plot, "
                  f"{plot}, and pick one by hand")
        else:
            print(f"Learning-rate finder: lr {suggestion.lr:.3g}, {suggestion.reason} (lr {suggestion.start:.2g} to "
                  f"{suggestion.end:.2g}, where the smoothed loss fell {suggestion.high:.3g} -> {suggestion.low:.3g}); "
                  f"check it on the plot, {plot}")
            flags.append(f"--model.optimizer.lr {suggestion.lr:.3g}")
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
        self.path = outputs.save_figure(figure, self.path, str(self.path.parent.resolve()), dpi=120,
                                        bbox_inches="tight")
        plt.close(figure)
        raise _SchedulePlotted
