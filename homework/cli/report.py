"""The last lines of a fit that did not end with a best checkpoint: stopped before validating, interrupted
(Ctrl-C), or diverged. (A finished fit's are `HomeworkCLI.after_fit`'s.) Each says what was kept, where, and
the command that goes on from there; `cli` is the HomeworkCLI that ran the fit."""
import os
import sys
from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from callbacks.interrupt import stopped_by
from homework import runs
from homework.command_line import command
from homework.runs import launched_rank, tracking


def say_no_best(cli, ckpt: ModelCheckpoint | None) -> None:
    """A fit that ended before validating (`--trainer.max_steps 3`, a quick check) has no best checkpoint,
    but a last one: say so, and the command that trains long enough to validate."""
    last = Path(ckpt.dirpath) / "last.ckpt" if ckpt is not None and ckpt.dirpath else None
    if last is None or not last.is_file():
        print(f"No checkpoint was saved. Run directory: {cli.run_dir}")
        return
    if ckpt.monitor in cli.trainer.callback_metrics:  # validated, but kept no best (--checkpoint.save_top_k 0)
        print(f"No best checkpoint kept: last.ckpt saved in {last.parent}\nRun directory: {cli.run_dir}")
        return
    steps, where = cli.trainer.global_step, os.path.relpath(last.parent)
    print(f"No validation ran in {steps} step{'s' * (steps != 1)}, so no best checkpoint: last.ckpt saved in "
          f"{last.parent if where.startswith('..') else where}\nRun directory: {cli.run_dir}")
    if cli.config[cli.subcommand].trainer.max_steps not in (None, -1):  # (from the run's own config)
        again = command(cli.datamodule_class.homework, "fit", "--config", cli.run_dir / "config.yaml",
                        "--trainer.max_steps", -1)
        print(f"Next: {again}  "
              f"(validation, which keeps the best checkpoint, runs at the end of each epoch)")

def say_interrupted(cli, discarded: bool) -> None:
    """Ctrl-C (or SIGTERM) ends like every command: what was kept, where, and the command that continues the run."""
    if launched_rank() > 0:
        return
    sys.stderr.flush()
    if getattr(cli, "subcommand", None) != "fit" or cli.run_dir is None or cli.tuned:
        print(f"Interrupted ({stopped_by()})", flush=True)
        return
    if discarded or not cli.run_dir.is_dir():
        print(f"Interrupted ({stopped_by()}) before the first checkpoint: nothing was kept, and the run directory "
              f"{cli.run_dir} was removed", flush=True)
        return
    offline = tracking.offline_dir(cli.config[cli.subcommand].trainer)
    if offline:
        print(f"W&B: logged offline; upload with `wandb sync {offline}/offline-run-*`")
    record = runs.read_record(cli.run_dir) or {}
    homework = cli.datamodule_class.homework
    if record.get("status") == "finished":  # (Ctrl-C came after training, e.g. during the diagnosis)
        print(f"Interrupted ({stopped_by()}) after training finished\nRun directory: {cli.run_dir}\n"
              f"Next: {command(homework, 'predict', '--ckpt_path', cli.run_dir)}", flush=True)
        return
    best = ""
    if record.get("best_score") is not None:
        best = f"; best {record['monitor']} {record['best_score']:.4f} at epoch {record['best_epoch']}"
    last = cli.run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        print(f"Interrupted ({stopped_by()}). Kept {last} ({runs.saved_at(last)}){best}\nRun directory: {cli.run_dir}\n"
              f"Continue: {command(homework, 'fit', '--resume', cli.run_dir)}", flush=True)
    else:  # --checkpoint.save_last false: the checkpoints kept cannot be resumed, only started from
        print(f"Interrupted ({stopped_by()}). Kept the checkpoints in {cli.run_dir / 'checkpoints'}{best}, but no "
              f"last.ckpt to resume from (--checkpoint.save_last false)\nRun directory: {cli.run_dir}\n"
              f"Next: {command(homework, 'predict', '--ckpt_path', cli.run_dir)}", flush=True)

def resume_hint(cli) -> str:
    """`; once there is room: fit --resume RUN` where a fit stopped by a full disk kept a last.ckpt, else ""."""
    run_dir = getattr(cli, "run_dir", None)
    if (getattr(cli, "subcommand", None) != "fit" or run_dir is None
            or not (run_dir / "checkpoints" / "last.ckpt").is_file()):
        return ""
    return ("; the checkpoints saved are whole: once there is room, "
            f"{command(cli.datamodule_class.homework, 'fit', '--resume', run_dir)}")


def warn_if_diverged(cli, ckpt: ModelCheckpoint) -> None:
    """Early stopping ends a run whose metric turns NaN/inf; say so in words a student acts on."""
    current = cli.trainer.callback_metrics.get(ckpt.monitor)
    if current is None or torch.isfinite(current):
        return
    best = ("no epoch had a finite score, so no checkpoint is worth predicting with"
            if not torch.isfinite(ckpt.best_model_score) else "the best checkpoint is from before that")
    print(f"warning: training diverged: {ckpt.monitor} became {float(current)} after "
          f"{cli.trainer.current_epoch} epoch(s) and early stopping ended the run; {best}. "
          f"Try a smaller learning rate (--model.optimizer.lr). Run directory: {cli.run_dir}", file=sys.stderr)
