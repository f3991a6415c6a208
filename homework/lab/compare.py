"""`compare`: one homework's recipe under several optimizers, schedules or batch sizes, for the same epoch
budget and seed, drawn in one figure with a table of final metrics and wall time (the optimization lectures,
on the student's own data).

    python homework/hw1.py compare --optimizers sgd,sgd_momentum,adagrad,rmsprop,adam,adamw,radam \
        --trainer.max_epochs 100
    python homework/hw1.py compare --schedules constant,step,warmup_cosine
    python homework/hw1.py compare --batch_sizes 16,64,256 --lr 0.001
    python homework/hw11.py compare --recipes source_only,sample,default

Each variant is a normal `fit` run (its own run directory, checkpoints, learning curve and W&B run) inside
one comparison directory `runs/hwN/<stamp>_compare/`, one after the other in this process, like the folds
of `--data.fold all` (kfold.py). Every other option goes to every run. Early stopping is off unless
`--early_stopping.patience` is given, so every variant trains the same budget. At the end the directory
holds `comparison.png` (training loss dashed, validation solid, one colour per variant) and
`comparison.md` (the table, also printed).

What each variant name means (flags added after the user's own, so they win):
  optimizers (learning rate: the value below, each optimizer's usual default, or `--lr` for all):
    sgd           torch.optim.SGD lr 0.01
    sgd_momentum  torch.optim.SGD lr 0.01, momentum 0.9
    adagrad       torch.optim.Adagrad lr 0.01 (torch's default)
    rmsprop       torch.optim.RMSprop lr 0.001 (the lecture's and Keras's; torch's 0.01 diverges easily)
    adam          torch.optim.Adam lr 0.001
    adamw         torch.optim.AdamW lr 0.001, weight decay 0.01 (torch's default)
    radam         torch.optim.RAdam lr 0.001
    (each starts from its own defaults, not the recipe's optimizer settings; the recipe's schedule stays)
  schedules (the recipe's optimizer, `--lr` if given):
    constant      no schedule
    step          StepLR: x0.1 after each third of the epochs
    warmup_cosine callbacks.WarmupCosineLR: linear warmup over 5% of the steps, then cosine decay to 0
  batch sizes: `--data.batch_size N` for each N (the recipe's optimizer and schedule, `--lr` if given).
  recipes: the homework's own recipes, `default` (homework/configs/hwN.yaml) or NAME for
    homework/configs/hwN_NAME.yaml (HW3's `sample` and `strong`, HW11's `sample` and `source_only`), each
    given as `--config` before the user's options (which win), all for the same epoch budget.
"""

import datetime as dt
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import yaml

from callbacks.finite import NonFiniteLoss
from datamodules import outputs
from datamodules.errors import DataError
from datamodules.lab_hooks import ReferenceScore
from homework import runs
from homework.command_line import CONFIG_DIR, option, take

NO_EARLY_STOP = "1000000"  # patience longer than any budget: every variant trains the same epochs

OPTIMIZERS: dict[str, tuple[str, float, dict]] = {  # name -> (class, usual lr, other arguments)
    "sgd": ("torch.optim.SGD", 0.01, {}),
    "sgd_momentum": ("torch.optim.SGD", 0.01, {"momentum": 0.9}),
    "adagrad": ("torch.optim.Adagrad", 0.01, {}),
    "rmsprop": ("torch.optim.RMSprop", 0.001, {}),
    "adam": ("torch.optim.Adam", 0.001, {}),
    "adamw": ("torch.optim.AdamW", 0.001, {"weight_decay": 0.01}),
    "radam": ("torch.optim.RAdam", 0.001, {}),
}
SCHEDULES = ("constant", "step", "warmup_cosine")
CHOICES = ("--optimizers", "--schedules", "--batch_sizes", "--recipes")
NOT_RECIPES = ("tiny", "space")  # configs beside a homework's recipes that are no recipe (homework/registry.py)


@dataclass
class Result:
    """One variant's run: what the table and the figure show."""

    variant: str
    run_dir: Path
    monitor: str | None  # None: not known from this variant (it diverged before recording it)
    mode: str | None
    best_score: float  # NaN: no finite score (diverged)
    best_epoch: int | None
    epochs: int
    seconds: float
    history: dict  # LearningCurvePlot.history: metric -> [(epoch, value)]
    note: str = ""

    def final(self, name: str) -> float:
        points = self.history.get(name) or [(0, math.nan)]
        return float(points[-1][1])

    def at_best(self, name: str) -> float:
        """`name`'s value at the best epoch (the checkpoint `best` means); NaN where it was not logged."""
        return next((float(v) for e, v in self.history.get(name, []) if e == self.best_epoch), math.nan)


def variant_flags(kind: str, name: str, lr: str | None, max_epochs: int, own: dict | None = None) -> list[str]:
    """The command-line flags that make variant `name` of `kind` (see the module docstring; `own`: the task's
    `variants`)."""
    lr_flags = ["--model.optimizer.lr", lr] if lr is not None else []
    if own and kind in own:
        return [*own[kind][name], *lr_flags]
    if kind == "--optimizers":
        cls, usual, extra = OPTIMIZERS[name]
        flags = ["--model.optimizer", cls, "--model.optimizer.lr", lr if lr is not None else str(usual)]
        for key, value in extra.items():
            flags += [f"--model.optimizer.{key}", str(value)]
        return flags
    if kind == "--schedules":
        if name == "constant":
            return ["--model.lr_scheduler", "null", *lr_flags]
        if name == "step":
            return ["--model.lr_scheduler", "torch.optim.lr_scheduler.StepLR", "--model.lr_scheduler.step_size",
                    str(max(1, math.ceil(max_epochs / 3))), "--model.lr_scheduler.gamma", "0.1", *lr_flags]
        return ["--model.lr_scheduler", "callbacks.WarmupCosineLR", "--model.lr_scheduler.warmup_steps", "0.05",
                "--model.lr_scheduler.min_lr_ratio", "0.0", *lr_flags]
    return ["--data.batch_size", name, *lr_flags]


def recipes(homework: str) -> list[str]:
    """The homework's recipe names: `default` and each NAME of homework/configs/hwN_NAME.yaml."""
    named = sorted(p.stem.removeprefix(f"{homework}_") for p in CONFIG_DIR.glob(f"{homework}_*.yaml"))
    return ["default", *(n for n in named if n not in NOT_RECIPES)]


def recipe_flags(homework: str, name: str) -> list[str]:
    """`--config` of recipe `name` (nothing for `default`: the homework's YAML is the parser's defaults)."""
    return [] if name == "default" else ["--config", str(CONFIG_DIR / f"{homework}_{name}.yaml")]


def _names(kind: str, value: str, homework: str = "", own: dict | None = None) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    valid = (list(OPTIMIZERS) if kind == "--optimizers" else list(SCHEDULES) if kind == "--schedules"
             else recipes(homework) if kind == "--recipes" else None)
    valid = list(own[kind]) if own and kind in own else valid
    for name in names:
        if valid is not None and name not in valid:
            raise DataError(f"{kind}: unknown variant '{name}'; choose from {','.join(valid)}")
        if valid is None and (not name.isdigit() or int(name) < 1):
            raise DataError(f"{kind}: '{name}' is not a batch size (a positive whole number)")
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"{kind} {value}: name at least two different variants, separated by commas")
    return names


def _max_epochs(args: list[str], homework: str) -> int:
    """The epoch budget: `--trainer.max_epochs`, else the last `--config` file's, else the homework's YAML."""
    given = option(args, "--trainer.max_epochs")
    if given is not None:
        if not given[1].isdigit() or int(given[1]) < 1:
            raise DataError(f"compare: --trainer.max_epochs {given[1]}: give a positive number of epochs")
        return int(given[1])
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"] + [CONFIG_DIR / f"{homework}.yaml"]
    for path in configs:
        try:
            epochs = ((yaml.safe_load(Path(path).read_text()) or {}).get("trainer") or {}).get("max_epochs")
        except (OSError, yaml.YAMLError):
            continue  # the CLI itself reports a bad --config in one line
        if isinstance(epochs, int) and epochs > 0:
            return epochs
    raise DataError("compare needs a fixed budget: pass --trainer.max_epochs N")



def compare_command(args: list[str], make_cli: Callable[[list[str]], object], datamodule_class,
                    model_class=None) -> list[Result]:
    """Fit every variant one after the other in one comparison directory, then draw and tabulate them. A task may
    declare its own kinds of variant, `variants = {"--losses": {"CE": (flags...), "KD": (...)}}` (HW13's)."""
    homework = datamodule_class.homework
    own = dict(getattr(model_class, "variants", None) or {})
    if "--help" in args or "-h" in args:
        print(__doc__.strip() + "\n\nEvery other option is `fit`'s: python homework/" + homework + ".py fit --help")
        raise SystemExit(0)
    rest, kinds = list(args), {}
    for kind in (*CHOICES, *own):
        rest, value = take(rest, kind)
        if value is not None:
            kinds[kind] = value
    rest, lr = take(rest, "--lr")
    if len(kinds) != 1:
        theirs = "".join(f", {kind} {','.join(names)}" for kind, names in own.items())
        raise DataError(f"compare runs one kind of variant: give exactly one of --optimizers a,b,..., "
                        f"--schedules a,b,..., --batch_sizes m,n,..., --recipes a,b,...{theirs} (see compare --help)")
    (kind, value), = kinds.items()
    names = _names(kind, value, homework, own)
    if lr is not None:
        try:
            if float(lr) <= 0:
                raise ValueError
        except ValueError:
            raise DataError(f"--lr {lr}: give a positive learning rate") from None
    max_epochs = _max_epochs(rest, homework)
    at = rest.index("compare")
    root = option(rest, "--trainer.default_root_dir")
    root = runs.root_dir(homework, root[1] if root else None)
    compare_dir = runs.new_run_dir(root, "compare", [])
    results, ceiling = [], None
    for name in names:
        if kind == "--recipes":  # a recipe first, so the user's options win; then the one budget for all
            run_args = (rest[:at] + ["fit", *recipe_flags(homework, name), "--early_stopping.patience",
                                     NO_EARLY_STOP] + rest[at + 1:] + ["--trainer.max_epochs", str(max_epochs)]
                        + (["--model.optimizer.lr", lr] if lr is not None else []))
        else:
            run_args = (rest[:at] + ["fit", "--early_stopping.patience", NO_EARLY_STOP] + rest[at + 1:]
                        + variant_flags(kind, name, lr, max_epochs, own))
        run_args += ["--trainer.default_root_dir", str(compare_dir)]
        print(f"\n=== {kind[2:]}: {name} ({len(results) + 1} of {len(names)}) ===", flush=True)
        start = time.perf_counter()
        try:
            cli = make_cli(run_args)
        except NonFiniteLoss as err:  # a diverging variant is a result too (the lectures' point), not the end
            print(f"{name}: {err}", file=sys.stderr)
            results.append(_diverged(name, compare_dir, {r.run_dir for r in results}, time.perf_counter() - start))
            continue
        results.append(_result(name, cli, time.perf_counter() - start))
        # a ceiling the homework scored (HW13's teacher), as the fit's diagnosis recorded it: the hook is not
        # called again (HW8's reference fits a PCA, and is no ceiling)
        scored = (cli.record.record if getattr(cli, "record", None) is not None else {}).get("reference_score")
        ceiling = ReferenceScore(**scored) if scored and scored.get("ceiling") else ceiling
        del cli  # the next variant builds its own model and data
    results = _one_metric(results)
    monitor = results[0].monitor
    figure = plot_comparison(results, compare_dir / "comparison.png",
                             f"{homework}: {len(names)} {kind[2:]}, {max_epochs} epoch{'s' * (max_epochs != 1)} each",
                             str(compare_dir))
    table = comparison_table(results)
    heading = (f"# {homework} {kind[2:]} compared\n\nSame recipe, seed and budget ({max_epochs} epochs, early "
               f"stopping {'off' if option(rest, '--early_stopping.patience') is None else 'as given'}); "
               f"`{' '.join(['python', f'homework/{homework}.py', *args])}`, "
               f"{dt.datetime.now().isoformat(timespec='seconds')}.\n\n")
    if ceiling is not None:  # (HW13: the teacher, side by side with its students)
        table += f"\n\nCeiling: {ceiling.model}, {ceiling.monitor} {ceiling.score:.4f}"
    outputs.write(compare_dir / "comparison.md", heading + table + f"\n\n![comparison]({figure.name})\n")
    scored = [r for r in results if math.isfinite(r.best_score)]
    best = (min if results[0].mode == "min" else max)(scored, key=lambda r: r.best_score) if scored else None
    print(f"\n{table}\n")
    if best is not None:
        print(f"Best: {best.variant} ({monitor} {best.best_score:.4f} at epoch {best.best_epoch})")
    print(f"Figure: {figure}\nComparison directory: {compare_dir}")
    return results


def _one_metric(results: list[Result]) -> list[Result]:
    """Every variant with the homework's metric and direction, taken from a variant that ran: one that diverged
    before recording it would otherwise title the table "val_loss" and pick the best of a higher-is-better
    metric (val_acc) as its lowest."""
    known = next((r for r in results if r.monitor is not None and r.mode is not None), None)
    monitor, mode = (known.monitor, known.mode) if known is not None else ("val_loss", "min")
    return [r if r.monitor is not None and r.mode is not None else replace(r, monitor=monitor, mode=mode)
            for r in results]


def _result(name: str, cli, seconds: float) -> Result:
    from callbacks import LearningCurvePlot

    record = cli.record.record if getattr(cli, "record", None) is not None else {}
    curve = next((c for c in cli.trainer.callbacks if isinstance(c, LearningCurvePlot)), None)
    score = record.get("best_score")
    return Result(name, cli.run_dir, cli.model.monitor, cli.model.mode,
                  float(score) if score is not None else math.nan, record.get("best_epoch"),
                  int(record.get("epochs") or 0), seconds, dict(curve.history) if curve else {})


def _diverged(name: str, compare_dir: Path, done: set[Path], seconds: float) -> Result:
    """The result of a variant whose training loss turned NaN/inf: its run directory's record, and the
    learning curve up to its last checkpoint (the curve is kept in checkpoints)."""
    import torch

    new = [d for d in compare_dir.iterdir() if d.is_dir() and d not in done] if compare_dir.is_dir() else []
    if not new:  # it diverged before its first checkpoint, so the CLI removed its directory
        return Result(name, compare_dir / "-", None, None, math.nan, None, 0, seconds, {},
                      note="diverged before its first checkpoint")  # (its metric: the other variants')
    run_dir = max(new, key=lambda d: d.stat().st_mtime)
    record = runs.read_record(run_dir) or {}
    history = {}
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        states = torch.load(last, map_location="cpu", weights_only=False).get("callbacks", {})
        curve = next((v for k, v in states.items() if k.startswith("LearningCurvePlot")), {})
        history = {k: [(int(e), float(v)) for e, v in points] for k, points in curve.get("history", {}).items()}
    return Result(name, run_dir, record.get("monitor"), record.get("mode"), math.nan,
                  None, int(record.get("epochs") or 0), seconds, history, note="diverged (training loss NaN/inf)")


def comparison_table(results: list[Result]) -> str:
    """A Markdown table: variant, best validation metric and its epoch, the other validation metrics at that
    epoch (HW11's target accuracy beside the label-free score that picked it), final losses, epochs, wall
    time, run."""
    monitor = results[0].monitor
    others = sorted(set.intersection(*[{n for n in r.history if n.startswith("val_")} for r in results])
                    - {"val_loss", monitor})
    rows = [["variant", f"best {monitor}", "at epoch", *[f"{n} there" for n in others], "final train_loss",
             "final val_loss", "epochs", "wall time (s)", "run"],
            *[[r.variant, f"{r.best_score:.4f}" if math.isfinite(r.best_score) else "-",
               str(r.best_epoch) if r.best_epoch is not None else "-",
               *[f"{r.at_best(n):.4g}" for n in others], f"{r.final('train_loss'):.4g}",
               f"{r.final('val_loss'):.4g}", str(r.epochs), f"{r.seconds:.1f}",
               r.run_dir.name + (f" ({r.note})" if r.note else "")] for r in results]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plot_comparison(results: list[Result], path: Path, title: str, inputs: str = "") -> Path:
    """Training loss (dashed) and validation loss (solid) per epoch, one colour per variant, side by side on
    one y scale (log where the curves span more than 20x); a third panel for the monitored metric when it is
    not the validation loss itself (accuracy, BLEU). Saved by the output rule: returns where it went."""
    from matplotlib.ticker import MaxNLocator

    from callbacks.plots import pyplot

    plt = pyplot()
    monitor = results[0].monitor
    metric_panel = any(r.history.get(monitor) != r.history.get("val_loss") for r in results if monitor in r.history)
    panels = [("train_loss", "training loss", "--"), ("val_loss", "validation loss", "-")]
    panels += [(monitor, f"{monitor} ({'higher' if results[0].mode == 'max' else 'lower'} is better)", "-")] \
        if metric_panel else []
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    axes = axes[0]
    colors = plt.get_cmap("tab10").colors
    for ax, (name, label, style) in zip(axes, panels):
        for result, color in zip(results, colors * 3):
            points = [(e, v) for e, v in result.history.get(name, []) if math.isfinite(v)]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, style, color=color, linewidth=1.5, label=result.variant,
                        marker="o" if len(points) == 1 else None)  # (one epoch is a point, not an empty panel)
        ax.set_title(label + (" (= " + monitor + ")" if name == "val_loss" and not metric_panel else ""))
        ax.set_xlabel("epoch (from 0)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        left, right = ax.get_xlim()
        ax.set_xlim(min(left, -0.5), max(right, 0.5))  # (an integer tick even when every variant ran one epoch)
        ax.grid(alpha=0.3, which="both")
    losses = [v for r in results for n in ("train_loss", "val_loss") for _, v in r.history.get(n, [])
              if math.isfinite(v)]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:  # early epochs would flatten the rest
        for ax in axes[:2]:
            ax.set_yscale("log")
    for ax, (name, label, _) in zip(axes, panels):  # every panel says what its y axis is
        ax.set_ylabel((monitor if name == monitor else "loss") + (" (log scale)" if ax.get_yscale() == "log" else ""))
    if losses:  # one scale for both loss panels, so train and validation compare by eye; the first tenth
        # of the epochs (from the untrained model's loss down) would squeeze where the variants differ
        low, high = min(axes[0].get_ylim()[0], axes[1].get_ylim()[0]), max(axes[0].get_ylim()[1], axes[1].get_ylim()[1])
        settled = [points[min(len(points) - 1, math.ceil(0.1 * len(points)))][1] for r in results
                   for n in ("train_loss", "val_loss") if (points := r.history.get(n)) and len(points) >= 10]
        settled = [v for v in settled if math.isfinite(v)]
        cut = 2 * max(settled) if settled else high
        for ax in axes[:2]:
            ax.set_ylim(low, min(high, cut))
        if cut < high:
            for ax in axes[:2]:
                ax.set_ylabel(ax.get_ylabel() + "; top cut at 2x the\nworst value after a tenth of the epochs")
    fig.suptitle(title + ": training loss dashed, validation solid", fontsize=11)
    fig.tight_layout()
    handles, labels = axes[1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 7),
               fontsize=9.5, frameon=False)
    path = outputs.save_figure(fig, path, inputs, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
