"""The size/accuracy trade-off (network compression): parameters against the best validation score of this run and
of the runs beside it (a `compare`'s variants, or earlier fits on the same data), the parameter budget as a line and
the teacher's score as the ceiling."""

import json
import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from callbacks.plots import RunPictures, pyplot
from datamodules import outputs

DEFAULT_NAME = "size_accuracy.png"


def sibling_runs(run_dir: Path) -> list[tuple[str, dict]]:
    """(name, run.json) of the runs in `run_dir`'s folder, `run_dir` excluded (run.json read as plain JSON:
    callbacks sit below the run machinery)."""
    found = []
    for other in sorted(run_dir.parent.iterdir()) if run_dir.parent.is_dir() else []:
        record_file = other / "run.json"
        if other.resolve() == run_dir.resolve() or not record_file.is_file():
            continue
        try:
            found.append((other.name, json.loads(record_file.read_text())))
        except ValueError:
            continue
    return found


class SizeAccuracyPlot(RunPictures):
    """At the end of fit, `size_accuracy.png` in the run directory: each run's parameter count (the task's
    `run_record()["student_parameters"]`, as the course counts it) against its best `monitor`, for this run and the
    runs of the same homework and data beside it; the budget (`run_record()["max_params"]`) as a vertical line, and
    the DataModule's ceiling reference (`reference_score()`: HW13's teacher) as a horizontal one."""

    DEFAULT_NAMES = {"filename": DEFAULT_NAME}

    def __init__(self, filename: str = DEFAULT_NAME) -> None:
        self.filename = filename

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        if not trainer.is_global_zero or ckpt is None or ckpt.best_model_score is None \
                or not hasattr(pl_module, "run_record"):
            return
        run_dir = Path(trainer.default_root_dir)
        own = pl_module.run_record()
        datamodule = trainer.datamodule
        data_dir = str(Path(datamodule.data_dir).resolve())
        seed = os.environ.get("PL_GLOBAL_SEED")
        points = [(f"this run (seed {seed})", own["student_parameters"], float(ckpt.best_model_score),
                   own.get("loss_fn_type", ""))]
        for name, record in sibling_runs(run_dir):
            if (record.get("homework"), record.get("data_dir")) == (datamodule.homework, data_dir) \
                    and record.get("student_parameters") and record.get("best_score") is not None:
                points.append((f"seed {record.get('seed')}", record["student_parameters"], record["best_score"],
                               record.get("loss_fn_type", "")))
        reference = datamodule.reference_score(0)
        ceiling = reference if reference is not None and reference.ceiling else None
        chosen = run_dir / self.filename
        path = draw(points, own.get("max_params"), ceiling, pl_module.monitor, chosen,
                    f"{datamodule.homework}: size against {pl_module.monitor}, {len(points)} run(s) on "
                    f"{'the demo data' if datamodule.is_demo else Path(data_dir).name}", str(run_dir.resolve()),
                    self.option())
        rank_zero_info(f"Size/accuracy picture: {path}{outputs.kept(chosen, path)}")


def draw(points, budget, ceiling, monitor: str, path: Path, title: str, inputs: str = "",
         option: str | None = None) -> Path:
    """Points (label, parameters, score, kind) on a log parameter axis; the budget and the ceiling as lines.
    Saved by the output rule (datamodules/outputs.py): returns where it went."""
    from matplotlib.ticker import FuncFormatter

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = {"CE": "tab:blue", "KD": "tab:orange", "FitNet": "tab:green"}
    for kind in dict.fromkeys(p[3] for p in points):
        chosen = [p for p in points if p[3] == kind]
        ax.scatter([p[1] for p in chosen], [p[2] for p in chosen], s=40, color=colors.get(kind, "tab:gray"),
                   label=f"student, {kind}" if kind else "student", zorder=3)
    for label, params, score, _ in points:
        ax.annotate(label, (params, score), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if budget:
        ax.axvline(budget, color="tab:red", linestyle="--", linewidth=1.2, label=f"budget: {budget:,} parameters")
    if ceiling is not None:
        ax.axhline(ceiling.score, color="black", linestyle=":", linewidth=1.2,
                   label=f"teacher: {ceiling.score:.3f} (ceiling)")
    counts = [p[1] for p in points] + ([budget] if budget else [])
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted({p[1] for p in points}))  # the counts themselves (a log axis within a decade has no labels;
    # the budget is named in the legend)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_xlim(min(counts) / 1.6, max(counts) * 1.6)
    scores = [p[2] for p in points] + ([ceiling.score] if ceiling is not None else [])
    low, high = min(scores), max(scores)
    pad = max(0.02, (high - low) * 0.15)
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad) if high <= 1 else high + pad)
    ax.set_xlabel("student parameters (torchsummary's Total params, log scale)")
    ax.set_ylabel(f"best {monitor}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8.5, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = outputs.save_figure(fig, path, inputs, option, dpi=110)
    plt.close(fig)
    return path
