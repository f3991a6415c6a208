"""k-fold cross-validation over all folds: `fit --data.num_folds 5 --data.fold all` trains every fold in
one cross-validation directory and reports mean ± std; `predict --ckpt_path <that directory>` averages
the folds' predictions (the classic Kaggle ensemble)."""

import datetime as dt
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch

from datamodules import outputs
from datamodules.errors import DataError
from homework import runs
from homework.command_line import command, command_word, option


def asks_for_all_folds(args: list[str]) -> bool:
    fold = option(args, "--data.fold")
    return fold is not None and fold[1] == "all"


def fit_all_folds(make_cli: Callable[[list[str]], object], args: list[str], datamodule_class) -> list:
    """Train fold 0..K-1 one after the other, each a normal run inside one cross-validation directory."""
    if command_word(args) != "fit":
        raise DataError("--data.fold all trains every fold: it goes with `fit` (predict with --ckpt_path <the "
                        "cross-validation directory> averages the folds)")
    folds = option(args, "--data.num_folds")
    if folds is None or not folds[1].isdigit() or int(folds[1]) < 2:
        raise DataError("--data.fold all needs --data.num_folds K (K >= 2): how many folds to split into")
    num_folds = int(folds[1])
    root = option(args, "--trainer.default_root_dir")
    root = runs.root_dir(datamodule_class.homework, root[1] if root else None)
    cv_dir = runs.new_run_dir(root, "fit", [f"cv{num_folds}"])
    position = option(args, "--data.fold")[0]
    clis, scores = [], []
    for fold in range(num_folds):
        fold_args = [a for i, a in enumerate(args) if i not in (position, position + 1)
                     and not a.startswith("--data.fold=")]
        fold_args += ["--data.fold", str(fold), "--trainer.default_root_dir", str(cv_dir)]
        print(f"\n=== fold {fold} of {num_folds} ===", flush=True)
        cli = make_cli(fold_args)
        clis.append(cli)
        ckpt = cli.trainer.checkpoint_callback
        scores.append(float(ckpt.best_model_score) if ckpt and ckpt.best_model_score is not None else float("nan"))
    monitor = clis[0].model.monitor
    mean, std = statistics.fmean(scores), statistics.stdev(scores)
    summary = {"monitor": monitor, "num_folds": num_folds, "scores": scores, "mean": mean, "std": std,
               "finished": dt.datetime.now().isoformat(timespec="seconds")}
    outputs.write(cv_dir / "cv.json", json.dumps(summary, indent=1))
    print(f"\n{monitor} over {num_folds} folds: {mean:.4f} ± {std:.4f} "
          f"(folds: {', '.join(f'{s:.4f}' for s in scores)})\nCross-validation directory: {cv_dir}\n"
          f"Next: {command(datamodule_class.homework, 'predict', '--ckpt_path', cv_dir)}   "
          f"# averages the {num_folds} folds' predictions")
    return clis


def fold_checkpoints(cv_dir: Path) -> list[Path]:
    """The best checkpoint of each fold run in a cross-validation directory."""
    found, others = [], []
    for run_dir in sorted(d for d in cv_dir.iterdir() if d.is_dir()):
        record = runs.read_record(run_dir)
        if not (record and record.get("best_checkpoint") and (run_dir / record["best_checkpoint"]).is_file()):
            continue
        if not isinstance((record.get("split") or {}).get("fold"), int):  # not a fold: a compare variant, a trial
            others.append((record, run_dir))
            continue
        found.append((run_dir / record["best_checkpoint"]).resolve())
    if others:  # averaging other recipes' models would be a silent ensemble nobody asked for
        sign = {"min": 1, "max": -1}
        record, best = min(others, key=lambda o: sign.get(o[0].get("mode"), 1) * o[0].get("best_score", math.inf))
        raise DataError(f"--ckpt_path {cv_dir}: not a cross-validation directory (its runs are not folds of one "
                        f"split, so their predictions are not averaged); predict with one of its runs, e.g. its best "
                        f"({record.get('monitor')} {record.get('best_score', math.nan):.4f}): --ckpt_path {best}")
    if len(found) < 2:
        raise DataError(f"--ckpt_path {cv_dir}: a directory must be a cross-validation run (fit --data.num_folds K "
                        f"--data.fold all) with at least 2 finished folds; found {len(found)}")
    return found


def predict_averaged(trainer: pl.Trainer, model: pl.LightningModule, datamodule, ckpts: list[Path]) -> None:
    """Predict with each fold's checkpoint (its weights and its data preprocessing), average, write once.

    The submission writer collects each fold's predictions (from every process, in order, under DDP) instead of
    writing them; process 0 writes the mean."""
    from callbacks import KaggleSubmissionWriter

    writers = [c for c in trainer.callbacks if isinstance(c, KaggleSubmissionWriter)]
    collector = writers[0] if writers else KaggleSubmissionWriter()  # it gathers every process's predictions
    holding = writers or [collector]
    trainer.callbacks += [] if writers else [collector]
    outputs = []
    try:
        for writer in holding:
            writer.hold = True
        for ckpt in ckpts:
            if trainer.is_global_zero:
                print(f"Predicting with {ckpt}", file=sys.stderr)
            trainer.predict(model, datamodule=datamodule, ckpt_path=str(ckpt), return_predictions=False)
            prediction = collector.held
            if not isinstance(prediction, torch.Tensor) or not prediction.is_floating_point():
                raise DataError(f"{datamodule.homework}'s predictions cannot be averaged over folds; "
                                f"predict with one fold's checkpoint instead")
            outputs.append(prediction.float())
    finally:
        for writer in holding:
            writer.hold, writer.held = False, None
        if not writers:
            trainer.callbacks.remove(collector)
    for writer in writers:
        if writer.output_dir is None:
            writer.output_dir = str(ckpts[0].parents[2])  # <cv dir>/<fold run>/checkpoints/x.ckpt -> <cv dir>
        if trainer.is_global_zero:
            writer.write(trainer, datamodule, torch.stack(outputs).mean(0))
