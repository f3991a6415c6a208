"""Pictures people would rather look at than read: the learning curve of every fit."""

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from datamodules import outputs
from datamodules.atomic import write_atomically

log = logging.getLogger(__name__)

BEST_COLOR, STOP_COLOR = "tab:green", "tab:red"


class _Figures:
    """The calls of `matplotlib.pyplot` the project's plots make, on figures that no backend owns: they only
    become PNG files (Agg, with or without a screen), and choosing pyplot's backend for that (`matplotlib.use`)
    would change it for the whole process, a notebook's kernel included, whose inline figures would stop
    showing (and switching closes the figures it has open)."""

    @staticmethod
    def subplots(*args, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        figure = Figure(figsize=figsize)
        return figure, figure.subplots(*args, **kwargs)

    @staticmethod
    def figure(figsize=None, dpi=None):
        from matplotlib.figure import Figure

        return Figure(figsize=figsize, dpi=dpi)

    @staticmethod
    def close(figure) -> None:
        """A figure made here needs no closing (no figure manager holds it: it is freed with its last reference);
        one a library drew through pyplot (Optuna's plots) is closed there, so pyplot does not keep it."""
        import sys

        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(figure)

    @staticmethod
    def get_cmap(name: str):
        import matplotlib

        return matplotlib.colormaps[name]


def pyplot() -> _Figures:
    """Figures drawn into PNG files, whatever backend pyplot has (see `_Figures`)."""
    return _Figures()


class RunPictures(pl.Callback):
    """A callback that draws pictures into the run directory under file names a user may choose: `DEFAULT_NAMES`,
    {init argument: its default file name}. A chosen name is an option (`Class.argument`): where a file not to
    replace is, it is refused in one line before training, not after it (`outputs.check`); a default name goes
    beside such a file instead (`outputs.save_figure`, then `outputs.kept` for the line)."""

    DEFAULT_NAMES: dict[str, str] = {}

    def option(self, name: str = "filename") -> str | None:
        """The option that named the picture's file; None for the default name."""
        return f"{type(self).__name__}.{name}" if getattr(self, name) != self.DEFAULT_NAMES[name] else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        root = Path(trainer.default_root_dir)
        for name in self.DEFAULT_NAMES:
            if trainer.is_global_zero and self.option(name):
                outputs.check(root / getattr(self, name), str(root.resolve()), self.option(name))


class LearningCurvePlot(pl.Callback):
    """Saves `learning_curve.png` in the run directory at the end of every fit, and logs it to W&B.

    Three panels over the epochs (counted from 0, as the checkpoint names): training vs validation loss,
    the model's main metric (its `monitor`: val_mse, val_acc, val_bleu, ...), and the learning rate as it
    changed step by step. The best epoch (the best checkpoint's) and the early-stopping point are marked
    on all three. Train and validation loss side by side is the course's tool for telling model bias,
    optimization trouble and overfitting apart; the learning rate beside them shows what the schedule did.
    The history is kept in checkpoints, so a resumed run draws the whole curve.
    """

    def __init__(self, filename: str = "learning_curve.png") -> None:
        self.filename = filename
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)  # metric -> (epoch, value)
        self.lr_history: list[tuple[float, float]] = []  # (epoch + fraction of it done, learning rate)
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None  # where early stopping ended the run; None: it ran to the end
        self.stop_reason: str | None = None
        self.recorded_epochs = 0
        self.recipe: str | None = None  # the optimizer, schedule and batch the curve shows (compare's variants)
        self.written: Path | None = None  # where the curve went (beside a file of the user's at `filename`)
        self._best_path: str | None = None

    # --- recording ------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        """The learning rate this batch trains with (before its step), at x = epoch + fraction done."""
        if not trainer.optimizers:
            return
        per_epoch = trainer.num_training_batches
        fraction = batch_idx / per_epoch if isinstance(per_epoch, int) and per_epoch > 0 else 0.0
        lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        x = trainer.current_epoch + fraction
        if self.lr_history and self.lr_history[-1][0] >= x:  # a resumed epoch served again from its start
            self.lr_history = [p for p in self.lr_history if p[0] < x]
        self.lr_history.append((x, lr))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recipe = recipe(trainer) or self.recipe

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)
        stopper = trainer.early_stopping_callback
        if stopper is not None and stopper.stopped_epoch:
            self.stopped_epoch = int(stopper.stopped_epoch)
            reason = getattr(getattr(stopper, "stopping_reason", None), "name", "")
            self.stop_reason = (f"no better {stopper.monitor} for {stopper.patience} epochs"
                                if reason == "PATIENCE_EXHAUSTED" else reason.lower().replace("_", " ") or None)

    def _record(self, trainer: pl.Trainer) -> None:
        """Note the epoch that just ended: only now are both its train and validation metrics final, and
        the checkpoint callback has decided whether it is the best so far."""
        completed = trainer.current_epoch
        if completed <= self.recorded_epochs:
            return
        self.recorded_epochs = completed
        for name, value in trainer.callback_metrics.items():
            if value.numel() == 1 and name.startswith(("train_", "val_")) and not name.endswith("_step"):
                self.history[name.removesuffix("_epoch")].append((completed - 1, float(value)))
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", None) if getattr(ckpt, "monitor", None) else None
        if best and best != self._best_path:
            self._best_path, self.best_epoch = best, completed - 1

    def state_dict(self) -> dict:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()},
                "lr_history": [list(p) for p in self.lr_history], "best_epoch": self.best_epoch,
                "best_path": self._best_path, "recorded_epochs": self.recorded_epochs, "recipe": self.recipe,
                "stopped_epoch": self.stopped_epoch, "stop_reason": self.stop_reason}

    def load_state_dict(self, state: dict) -> None:
        self.history = defaultdict(list, {k: [(int(e), float(v)) for e, v in points]
                                          for k, points in state.get("history", {}).items()})
        self.lr_history = [(float(x), float(lr)) for x, lr in state.get("lr_history", [])]
        self.best_epoch, self._best_path = state.get("best_epoch"), state.get("best_path")
        self.recorded_epochs = state.get("recorded_epochs", 0)
        self.recipe = state.get("recipe")
        self.stopped_epoch, self.stop_reason = state.get("stopped_epoch"), state.get("stop_reason")

    # --- drawing --------------------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self._draw(trainer, pl_module)
        for logger in trainer.loggers if path else []:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(key="learning_curve", images=[str(path)])

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A fit that stops early (Ctrl-C, a NaN loss, a crash) still gets the curve of its completed epochs
        (not sent to W&B: its run is being closed as failed)."""
        try:
            self._draw(trainer, pl_module)
        except Exception as err:  # never hide why the fit stopped
            log.warning("Could not draw the learning curve: %s", err)

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        if not trainer.is_global_zero or not self.history:
            return None
        chosen = Path(trainer.default_root_dir) / self.filename
        run = str(chosen.parent.resolve())  # the inputs: this run (redrawn when it is resumed)
        path = self.plot(chosen, getattr(pl_module, "monitor", None), getattr(pl_module, "mode", "min"), run)
        # the numbers behind it: the run's own file (`diagnose` reads learning_curve.json), always under that name
        write_atomically(chosen.with_suffix(".json"), json.dumps(self.state_dict()))
        self.written = path
        if path != chosen:  # (said only then: the run directory's listing names the curve)
            rank_zero_info(f"Learning curve: {path}{outputs.kept(chosen, path)}")
        log.info("Learning curve: %s", path)
        return path

    def best(self, monitor: str | None, mode: str = "min") -> tuple[int, float] | None:
        """(epoch, value) of the best epoch: the best checkpoint's, else the monitor's best value."""
        points = dict(self.history.get(monitor, []))
        if self.best_epoch is not None and self.best_epoch in points:
            return self.best_epoch, points[self.best_epoch]
        finite = [(e, v) for e, v in points.items() if math.isfinite(v)]
        if not finite:
            return None
        return (min if mode == "min" else max)(finite, key=lambda p: p[1])

    def plot(self, path: Path, monitor: str | None = None, mode: str = "min", inputs: str = "") -> Path:
        """Save the figure as `path` by the project's output rule (datamodules/outputs.py); returns where it went."""
        fig = self.figure(monitor, mode)
        path = outputs.save_figure(fig, path, inputs, dpi=110, bbox_inches="tight")
        pyplot().close(fig)
        return path

    def figure(self, monitor: str | None = None, mode: str = "min"):
        """The figure `plot` saves: loss panel, main-metric panel (when the monitor is not the loss
        itself), learning-rate panel (when recorded), sharing the epoch axis."""
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        plt = pyplot()
        losses = [name for name in ("train_loss", "val_loss") if name in self.history]
        losses += sorted(k for k in self.history if k.endswith("_loss") and k not in losses)
        self.alias = {}  # HW1's val_mse is its val_loss: one curve, one name for both
        if monitor in self.history and monitor not in losses and self.history[monitor] == self.history.get("val_loss"):
            self.alias = {"val_loss": monitor}
        metric = monitor if monitor in self.history and monitor not in losses and not self.alias else None
        panels = [("loss", losses)] + ([("metric", [f"train_{metric[4:]}", metric])] if metric else [])
        panels += [("lr", [])] if self.lr_history else []
        heights = {"loss": 3.2, "metric": 2.6, "lr": 1.5}
        fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(8, sum(heights[p] for p, _ in panels)),
                                 gridspec_kw={"height_ratios": [heights[p] for p, _ in panels]}, squeeze=False)
        axes = axes[:, 0]
        best = self.best(monitor, mode) if monitor else None
        for ax, (kind, names) in zip(axes, panels):
            if kind == "lr":
                xs, lrs = zip(*self.lr_steps())
                ax.plot(xs, lrs, color="tab:purple", linewidth=1.3, label="learning rate")
                ax.set_ylabel("learning rate")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
                ax.set_ylim(bottom=0)
            else:
                self._draw_series(ax, [n for n in names if n in self.history], monitor, best)
                ax.set_ylabel("loss" if kind == "loss" else metric[4:])
            self._mark_epochs(ax, best, monitor)
            ax.grid(alpha=0.3, which="both")
        shown = " (= " + self.alias["val_loss"] + ", the monitored metric)" if self.alias else ""
        title = f"loss{shown}: train vs validation" + (", log scale" if axes[0].get_yscale() == "log" else "")
        axes[0].set_title(title if not self.recipe else f"{self.recipe}\n{title}")
        if metric:
            better = "higher" if mode == "max" else "lower"
            axes[1].set_title(f"{metric[4:]}: train vs validation ({better} is better; {metric} picks the best epoch)"
                              if f"train_{metric[4:]}" in self.history else  # (HW5 scores BLEU on validation only)
                              f"{metric[4:]} on the validation split ({better} is better; it picks the best epoch)")
        axes[-1].set_xlabel("epoch (from 0" + ("; each epoch's steps drawn around its tick)"
                                                if self._fractional() else ")"))
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].set_xlim(*self._epoch_span())
        fig.text(0.5, 0.0, "both losses high: model bias or optimization trouble · train low, validation high or "
                           "rising: overfitting\n(early stopping keeps the best epoch's weights)",
                 ha="center", va="top", fontsize=8.5, color="dimgray")
        fig.tight_layout()
        legend = {}  # one legend above the panels, where it hides no curve: series, then the marked epochs
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        fig.legend(legend.values(), legend.keys(), loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3,
                   fontsize=9, frameon=False)
        return fig

    def _fractional(self) -> bool:
        """Whether the learning rate was recorded within epochs (several steps each), not once per epoch."""
        return any(not float(x).is_integer() for x, _ in self.lr_history)

    def lr_steps(self) -> list[tuple[float, float]]:
        """(x, learning rate) as drawn: an epoch's steps spread across the half epoch either side of its tick
        (its metrics' point), so the last epoch's steps end half an epoch after it, not a whole epoch."""
        shift = 0.5 if self._fractional() else 0.0
        return [(x - shift, lr) for x, lr in self.lr_history]

    def _epoch_span(self) -> tuple[float, float]:
        """The x range: the epochs drawn, with the learning rate's steps, and a small margin (no empty epoch)."""
        xs = [e for points in self.history.values() for e, _ in points] + [x for x, _ in self.lr_steps()]
        if self.stopped_epoch is not None:
            xs.append(self.stopped_epoch)
        low, high = min(xs), max(xs + [min(xs) + 1])
        margin = 0.02 * (high - low)
        return low - margin, high + margin

    def _draw_series(self, ax, names: list[str], monitor: str | None, best) -> None:
        for name in names:
            epochs, values = zip(*self.history[name])
            main = monitor in (name, self.alias.get(name))
            split = "train" if name.startswith("train_") else "validation"  # the panel's title names the quantity
            ax.plot(epochs, values, label=split,
                    linewidth=1.9 if main else 1.2, color="tab:blue" if name.startswith("train_") else "tab:orange",
                    marker="." if len(epochs) < 30 else None)
            if main and best is not None:  # its value is in the legend: a label on the axes would cross the curves
                ax.plot(*best, "o", color=BEST_COLOR, markersize=7, zorder=5)
        values = [v for n in names for _, v in self.history[n] if math.isfinite(v)]
        if values and min(values) > 0 and max(values) / min(values) > 20:  # early epochs would flatten the rest
            ax.set_yscale("log")

    def _mark_epochs(self, ax, best, monitor: str | None) -> None:
        """Vertical lines at the best epoch and where early stopping ended the run, labelled in the legend."""
        if best is not None:
            ax.axvline(best[0], color=BEST_COLOR, linestyle="--", linewidth=1.1,
                       label=f"best epoch {best[0]} ({monitor} {best[1]:.4g})")
        if self.stopped_epoch is not None:
            reason = f": {self.stop_reason}" if self.stop_reason else ""
            ax.axvline(self.stopped_epoch, color=STOP_COLOR, linestyle=":", linewidth=1.4,
                       label=f"early stop, epoch {self.stopped_epoch}{reason}")


def recipe(trainer: pl.Trainer) -> str | None:
    """The optimizer, schedule and batch size a fit trains with, in a few words for the figure's title
    ("AdamW lr 0.003, weight decay 0.01 · WarmupCosineLR · batch 128")."""
    if not trainer.optimizers:
        return None
    optimizer = trainer.optimizers[0]
    group = optimizer.param_groups[0]
    words = [f"{type(optimizer).__name__} lr {group.get('initial_lr', group['lr']):.3g}"]
    if group.get("momentum"):
        words[0] += f", momentum {group['momentum']:g}"
    if group.get("weight_decay"):
        words[0] += f", weight decay {group['weight_decay']:g}"
    configs = trainer.lr_scheduler_configs
    words.append(type(configs[0].scheduler).__name__ if configs else "constant lr")
    hparams = getattr(trainer.datamodule, "hparams", {}) if trainer.datamodule is not None else {}
    for key, what in (("batch_size", "batch"), ("max_tokens", "batches of")):
        if hparams.get(key):
            words.append(f"{what} {hparams[key]}" + (" tokens" if key == "max_tokens" else ""))
            break
    return " · ".join(words)
