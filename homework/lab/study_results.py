"""What a `tune` study leaves (homework/lab/tune.py runs it): best_config.yaml, which `fit --config` trains again
as a normal run; study.png (the metric per trial with the best so far, and the parameters' importances: Optuna's
matplotlib plots); trials.md, the top trials, also printed with the next command."""
import datetime as dt
import io
import math
import warnings
from pathlib import Path

import yaml

from datamodules import outputs
from homework.command_line import command


def report(study, study_dir: Path, homework: str, monitor: str, root: Path, diagnose_given: bool,
           n_trials: int):
    """best_config.yaml, study.png and trials.md in the study's directory; the table, the best trial and the
    next command printed last."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    summary = (f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
               f"{counts[TrialState.FAIL]} failed (of --n_trials {n_trials})")
    if not complete:
        print(f"\nStudy {study.study_name}: {summary}; no trial completed, so no best config yet\n"
              f"Study directory: {study_dir}")
        return study
    best = study.best_trial
    config_path = study_dir / "best_config.yaml"
    if best.user_attrs.get("config"):
        config_path = write_best_config(best, config_path, study.study_name, monitor, root, diagnose_given, homework)
    figure = plot_study(study, study_dir / "study.png", f"{homework}: study {study.study_name}, {summary}", monitor)
    table = trials_table(study, monitor)
    heading = (f"# {homework} study {study.study_name}\n\n{summary}; best {monitor} {best.value:.4f} (trial "
               f"{best.number}); {dt.datetime.now().isoformat(timespec='seconds')}.\n\n")
    outputs.write(study_dir / "trials.md", heading + table + f"\n\n![study]({figure.name})\n")
    print(f"\n{table}\n\nStudy {study.study_name}: {summary}")
    run_dir = Path(best.user_attrs.get("run_dir", ""))
    print(f"Best: trial {best.number}, {monitor} {best.value:.4f}"
          + (f" ({run_dir})" if run_dir.is_dir() else "") + f"\nFigure: {figure}\nStudy directory: {study_dir}")
    if config_path.is_file():
        print(f"Retrain it: {command(homework, 'fit', '--config', config_path)}")
    if run_dir.is_dir():
        print(f"Next: {command(homework, 'predict', '--ckpt_path', run_dir)}")
    elif config_path.is_file():  # trained by a worker on another machine
        print(f"Next: {command(homework, 'fit', '--config', config_path)}   # the best trial ran on another machine")
    return study


def write_best_config(best, path: Path, study_name: str, monitor: str, root: Path, diagnose_given: bool,
                      homework: str) -> Path:
    """The best trial's config.yaml as a normal fit's: no pruning callback, no study group, runs in the
    homework's runs folder, the advisor back on (unless the search's command line set it). Returns where it went
    (beside a file of the user's in `path`'s place, which it names: the output rule, datamodules/outputs.py)."""
    config = yaml.safe_load(best.user_attrs["config"])
    trainer = config.setdefault("trainer", {})
    callbacks = trainer.get("callbacks")
    if isinstance(callbacks, list):
        kept = [c for c in callbacks
                if not (isinstance(c, dict) and str(c.get("class_path", "")).endswith("OptunaPruning"))]
        trainer["callbacks"] = kept or None
    logger = trainer.get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict) \
            and logger["init_args"].get("group") == study_name:
        logger["init_args"]["group"] = None
    trainer["default_root_dir"] = str(root)
    if not diagnose_given and "diagnose" in config:
        config["diagnose"] = True
    went = outputs.target(path)
    header = (f"# The best trial ({best.number}) of study {study_name}: {monitor} {best.value:.4f}.\n"
              f"# Train it again as a normal run: {command(homework, 'fit', '--config', went)}\n")
    outputs.write(went, header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110))
    if went != path:
        print(f"Best config: {went}{outputs.kept(path, went)}")
    return went


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(study, monitor: str, top: int = 10) -> str:
    """A Markdown table of the best `top` complete trials: value, epochs, every parameter, run directory."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    sign = 1 if study.direction.name == "MINIMIZE" else -1
    ranked = sorted(complete, key=lambda t: sign * t.value)[:top]
    names = list(dict.fromkeys(name for t in ranked for name in t.params))
    rows = [["rank", "trial", monitor, "epochs", *names, "run"]]
    for i, t in enumerate(ranked, 1):
        rows.append([str(i), str(t.number), f"{t.value:.4f}", str(t.user_attrs.get("epochs", "-")),
                     *[format_value(t.params[n]) if n in t.params else "-" for n in names],
                     Path(t.user_attrs.get("run_dir", "-")).name])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plot_study(study, path: Path, title: str, monitor: str, inputs: str = "") -> Path:
    """Optuna's matplotlib plots side by side: the metric of each trial with the best so far (log scale where
    the values span more than 20x: one diverging trial would flatten the rest), and the parameters' importances
    (from the second complete trial on). Saved by the output rule: returns where it went."""
    import matplotlib
    import optuna.visualization.matplotlib as plots
    from matplotlib.ticker import MaxNLocator
    from PIL import Image

    from callbacks.plots import pyplot

    plt = pyplot()
    images, pngs = [], []
    # Optuna's plots call plt.style.use("ggplot"): inside rc_context, every later figure keeps the process's style
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Optuna's plots are "experimental")
        ax = plots.plot_optimization_history(study, target_name=monitor)
        values = [t.value for t in study.trials if t.value is not None and math.isfinite(t.value)]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
            ax.set_ylabel(f"{monitor} (log scale)")
        ax.set_title(f"{monitor} per complete trial ({'lower' if study.direction.name == 'MINIMIZE' else 'higher'} "
                     f"is better)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        images.append(ax.figure)
        try:
            ax = plots.plot_param_importances(study)
            ax.set_title("", loc="left")  # (Optuna's own, drawn over ours)
            ax.set_title(f"parameter importances for {monitor} (fANOVA)")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            images.append(ax.figure)
        except (ValueError, RuntimeError):  # fewer than two complete trials, or nothing varied
            pass
        for fig in images:
            fig.set_size_inches(7.0, 4.6)
            buffer = io.BytesIO()
            fig.savefig(buffer, dpi=110, bbox_inches="tight")
            plt.close(fig)
            pngs.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    title_height = 40
    width, height = sum(p.width for p in pngs), max(p.height for p in pngs) + title_height
    canvas = Image.new("RGB", (width, height), "white")
    x = 0
    for png in pngs:
        canvas.paste(png, (x, title_height))
        x += png.width
    fig = plt.figure(figsize=(width / 110, title_height / 110), dpi=110)
    fig.text(0.5, 0.5, title, ha="center", va="center", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110)
    plt.close(fig)
    canvas.paste(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), (0, 0))
    return outputs.save_figure(canvas, path, inputs)
