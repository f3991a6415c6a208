"""Where runs live and what they record, and which checkpoint `--ckpt_path best|last` means.

Every command that trains or evaluates gets its own directory `<root>/<stamp>_<command>[_foldKofN][_demo]`.
A fit writes `run.json` there: the resolved data directory, the split, the monitored metric and
the best score so far with its epoch and checkpoint. `best` is decided from these records alone:
the best-scoring checkpoint among the runs whose validation scores are comparable (same data
directory and split settings), never just the newest run's.
"""

import datetime as dt
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from datamodules import disk
from datamodules.atomic import replacing
from datamodules.errors import DataError
from datamodules.workspace import home
from homework.runs import tracking
from homework.command_line import option

RECORD = "run.json"
COMPARISON = "_compare"  # the name ending of a `compare` directory: its variants are not candidates for best/last


def launched_rank() -> int:
    """This process's rank in a multi-process run, read from what launched it (torchrun, SLURM, Lightning's
    own DDP launcher), before Lightning has set anything up: 0 for the one process that speaks and writes."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))


def root_dir(homework: str, given: str | Path | None = None) -> Path:
    """Where a homework's runs go: `--trainer.default_root_dir` when given, else `runs/<homework>` in the
    home folder (datamodules/workspace.py; the working directory when run from the project folder)."""
    if given is None or str(given) == f"runs/{homework}":  # (the parser's default: anchored to the home)
        return home() / "runs" / homework
    return Path(given).expanduser()


_created: dict[Path, list[Path]] = {}  # run directory -> the folders made for it, innermost first


def new_run_dir(root: Path, command: str, tags: list[str]) -> Path:
    """A new directory `<root>/<stamp>_<command>[_<tag>...]`, created here. `mkdir` without `exist_ok` is
    atomic, so two runs started in the same second never share one: the second gets a `-1` suffix.
    The folders created on the way are remembered: `discard_if_empty` removes those and nothing else."""
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    name = "_".join([stamp, command, *tags])
    made = [p for p in [root, *root.parents] if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        run_dir, n = root / name, 1
        while True:
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                run_dir, n = root / f"{name}-{n}", n + 1
    except OSError as err:  # a file in the way, a read-only disk, no permission, /proc ...
        why = err.strerror or type(err).__name__
        raise DataError(f"--trainer.default_root_dir {root}: cannot make a run directory there ({why}); "
                        f"pass a folder you can write to") from None
    _created[run_dir] = [run_dir, *made]
    return run_dir


def fold_tag(num_folds: int | None, fold: int | None) -> list[str]:
    return [] if num_folds is None else [f"fold{fold}of{num_folds}"]


def write_json(data: dict, path: Path) -> None:
    """Write through a temp file + rename: a run killed mid-write keeps its previous record."""
    with replacing(path, "w") as f:
        json.dump(data, f, indent=1)


class RunRecord(pl.Callback):
    """Keeps `run.json` up to date during a fit (what `--ckpt_path best` and k-fold summaries read)."""

    def __init__(self, run_dir: Path, homework: str, data_dir: Path, demo: bool, split: dict) -> None:
        self.path = run_dir / RECORD
        self.record = {"homework": homework, "command": "fit", "status": "running",
                       "started": dt.datetime.now().isoformat(timespec="seconds"), "seed": None, "wandb_id": None,
                       "data_dir": str(data_dir.resolve()), "demo": demo, "split": split,
                       "monitor": None, "mode": None, "best_score": None, "best_epoch": None,
                       "best_checkpoint": None, "epochs": 0, "parameters": None, "train_loss": None}

    def _save(self, trainer: pl.Trainer, ending: bool = False) -> None:
        """`ending`: the run's last word (it failed or was stopped), written even on a full disk, in place if it
        must (a rename needs room for a second copy), and never raising: what ended the run is what to report."""
        if not (trainer.is_global_zero and self.path.parent.is_dir()):
            return
        try:
            write_json(self.record, self.path)
        except OSError:
            if not ending:
                raise
            try:
                self.path.write_text(json.dumps(self.record, indent=1))
            except OSError:
                pass  # (the record stays as last written; `read_record` tells a run whose process ended)

    def resume(self) -> None:
        """Continue the record of the run being resumed (`fit --resume`): its best so far, and when it resumed."""
        old = read_record(self.path.parent) or {}
        resumed = old.get("resumed", []) + [self.record["started"]]
        self.record = {**self.record, **{k: v for k, v in old.items() if k not in ("status", "error")},
                       "resumed": resumed}  # (what ended the earlier part is not this part's end)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything: what makes the run reproducible
        self.record.update(monitor=getattr(pl_module, "monitor", None), mode=getattr(pl_module, "mode", None),
                           seed=int(seed) if seed is not None else None,
                           # the model's size, for the advisor's comparison of sizes (the lecture's test)
                           parameters=sum(p.numel() for p in pl_module.parameters() if p.requires_grad))
        self.record.update(getattr(pl_module, "run_record", dict)())  # the task's own (a plain LightningModule: none)
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._save(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        wandb_id = tracking.run_id(trainer)
        if wandb_id is not None:  # what `fit --resume` continues
            self.record["wandb_id"] = wandb_id
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["epochs"] = trainer.current_epoch + 1

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Called as each checkpoint is saved (the best one is already known then): a new best is recorded."""
        ckpt = trainer.checkpoint_callback
        if ckpt is None or not ckpt.best_model_path or ckpt.best_model_score is None:
            return
        best = os.path.relpath(ckpt.best_model_path, self.path.parent)
        if best != self.record["best_checkpoint"]:
            score = float(ckpt.best_model_score)
            self.record.update(best_checkpoint=best, best_epoch=trainer.current_epoch,
                               best_score=score if math.isfinite(score) else None)
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Said at once, before the seconds of shutdown that a second Ctrl-C may cut short."""
        self.finish(trainer, "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed",
                    error=disk.problem(exception))

    def finish(self, trainer: pl.Trainer, status: str, error: str | None = None) -> None:
        self.record["status"] = status
        if error is not None:  # what stopped it, in the words printed (a full disk)
            self.record["error"] = error
        # the last epoch's training loss: what sizes are compared by. Not for a stopped run on several processes:
        # reading the trainer's metrics syncs them with processes that may be gone (a gloo traceback from a barrier,
        # after a SIGTERM to the process group)
        stopped = status != "finished" and trainer.world_size > 1
        loss = None if stopped else trainer.callback_metrics.get("train_loss")
        if loss is not None and loss.numel() == 1 and math.isfinite(float(loss)):
            self.record["train_loss"] = float(loss)
        self._save(trainer, ending=status != "finished")

    def add(self, trainer: pl.Trainer, **values) -> None:
        """Keep more about the run (the advisor's reference, for `diagnose` later)."""
        self.record.update(values)
        self._save(trainer)


#: What a run record says when the process that wrote `running` has ended without a last word (SIGKILL, the
#: OOM killer, a power cut): its training lock is free (the OS released it with the process).
STOPPED = "stopped without saying why (killed?)"
LOCK = ".training.lock"


def still_training(run_dir: Path) -> bool | None:
    """Whether a process holds `run_dir`'s training lock (`hold`): False when the lock is free or gone, None when
    it cannot tell (a folder it may not open the lock in). Probed by taking the lock for an instant: `hold` waits a
    second for it, so a resume starting meanwhile is not refused."""
    from filelock import FileLock, Timeout

    lock_file = run_dir / LOCK
    if not lock_file.exists():  # (`release` removes it; a run that never locked is not training either)
        return False
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return None
    lock.release()
    return False


def settled(run_dir: Path, record: dict) -> dict:
    """`record` as it stands: a `running` one whose process has ended (its lock is free, and the record still says
    `running` after the lock was looked at, so not a run that just finished) is `stopped`, with STOPPED as its
    error, the epochs its last.ckpt holds and the best checkpoint its folder holds (`best_on_disk`). Not written
    back: reading never changes a run (it may be read-only, or resumed meanwhile)."""
    if record.get("status") != "running" or still_training(run_dir) is not False:
        return best_on_disk(run_dir, record) if record.get("status") != "running" else record
    again = _read(run_dir)
    if not isinstance(again, dict) or again.get("status") != "running":
        return best_on_disk(run_dir, again) if isinstance(again, dict) else record
    last = run_dir / "checkpoints" / "last.ckpt"  # (run.json is saved at each new best: its count may lag)
    done = epochs_done(last) if last.is_file() else None
    again = best_on_disk(run_dir, again)
    return {**again, "status": "stopped", "error": STOPPED, **({"epochs": done} if done is not None else {})}


def best_on_disk(run_dir: Path, record: dict) -> dict:
    """`record` naming the best checkpoint its run's folder holds. A run killed (or stopped by a full disk) while
    saving a new best names a file that was never written: Lightning calls the hook that records it
    (`RunRecord.on_save_checkpoint`) before writing the file, and deletes the previous best only after. That
    previous best is then found by its own saved state (its ModelCheckpoint state names itself as the best, with its
    score)."""
    import torch

    named = record.get("best_checkpoint")
    if not named or (run_dir / named).is_file():
        return record
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # (not a checkpoint this project wrote)
            continue
        for name, state in (saved.get("callbacks") or {}).items():
            score = state.get("best_model_score") if "Checkpoint" in name and isinstance(state, dict) else None
            if score is not None and Path(str(state.get("best_model_path"))).name == path.name:
                score = float(score)
                return {**record, "best_checkpoint": os.path.relpath(path, run_dir), "best_epoch": saved.get("epoch"),
                        "best_score": score if math.isfinite(score) else None}
    return {**record, "best_checkpoint": None, "best_score": None}


def describe_status(record: dict) -> str:
    """The record's status in words (`diagnose`'s heading, `best`'s choice)."""
    status = record.get("status")
    return STOPPED if status == "stopped" else str(status)


def _read(run_dir: Path):
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None


def read_record(run_dir: Path) -> dict | None:
    """The run's run.json (a `running` one whose process has ended reads `stopped`: `settled`), None if unreadable."""
    record = _read(run_dir)
    return settled(run_dir, record) if isinstance(record, dict) else None


def own_record(run_dir: Path, homework: str | None, flag: str) -> dict | None:
    """The run.json of `run_dir` when it is a run of `homework` (None: any homework's); None where there is none.
    A damaged one, or another homework's run, is a one-line DataError naming the file and `flag` (the option or
    command that named the run): `hw1.py fit --resume <an hw2 run>` would otherwise fail far later, on a setting."""
    path = run_dir / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) else "it is not valid JSON"
        raise DataError(f"{flag} {run_dir}: its run record {path} cannot be read ({why}); the run's checkpoints "
                        f"are still there: pass {run_dir / 'checkpoints' / 'last.ckpt'} to --ckpt_path") from None
    if not isinstance(record, dict):
        raise DataError(f"{flag} {run_dir}: its run record {path} is damaged (not a JSON object)")
    trained_by = record.get("homework")
    if homework is not None and trained_by is not None and trained_by != homework:
        raise DataError(f"{flag} {run_dir}: that is a run of {trained_by} ({path}), not of {homework}; use "
                        f"homework/{trained_by}.py with it")
    return settled(run_dir, record)


def saved_at(checkpoint: Path) -> str:
    """When in training a checkpoint was saved, read from the file itself: `the end of epoch 6` or
    `epoch 7, after 120 of its batches` (mapped, not read whole: HW5's are large)."""
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        epoch, batches = saved["epoch"], saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    except Exception:  # (not a checkpoint of this project's `fit`: say nothing rather than something wrong)
        return "saved during training"
    if batches.get("is_last_batch"):
        return f"the end of epoch {epoch}"
    return f"epoch {epoch}, after {batches['current']['completed']} of its batches"


def epochs_done(checkpoint: Path) -> int | None:
    """Whole epochs a checkpoint of `fit` has trained (read from the file, as `saved_at`); None where unreadable."""
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        epoch, batches = saved["epoch"], saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    except Exception:  # (not a checkpoint of this project's `fit`: the run record's count is used)
        return None
    return epoch + 1 if batches.get("is_last_batch") else epoch


def discard_if_empty(run_dir: Path | None) -> bool:
    """A run that failed before its first checkpoint leaves nothing behind: its directory, and the folders
    made for it (`runs/hwN`, `runs`) when nothing else is in them. Only what this process created goes:
    never a folder the user made, nor the working directory. True when the run directory was removed."""
    made = _created.pop(run_dir, []) if run_dir is not None else []
    if not made or not run_dir.is_dir() or any(run_dir.rglob("*.ckpt")):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in made[1:]:
        try:
            parent.rmdir()
        except OSError:  # not empty (another run, the user's files) or gone
            break
    return True


@dataclass(frozen=True)
class Choice:
    """A checkpoint picked for `--ckpt_path best|last`, with the words that say why."""

    path: Path
    reason: str


def run_dirs(root: Path) -> list[Path]:
    """Run directories under `root`: its children, and the runs inside a cross-validation directory (its folds)
    or a `tune` study's directory (its trials, candidates like any run).
    The variants of a `compare` are experiments, not candidates: `best` and `last` never pick them."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and not child.name.endswith(COMPARISON):
            found.append(child)
            found += [g for g in child.iterdir() if g.is_dir() and (g / RECORD).exists()]
    return found


def is_run_dir(path: Path) -> bool:
    """A directory one `fit` trained in (it holds run.json)."""
    return path.is_dir() and (path / RECORD).is_file()


def run_checkpoint(run_dir: Path, homework: str | None = None) -> Choice:
    """`--ckpt_path <run directory>`: that run's best checkpoint (what `fit` prints as the next command)."""
    record = own_record(run_dir, homework, "--ckpt_path") or {}
    best = record.get("best_checkpoint")
    if best and record.get("best_score") is not None and (run_dir / best).is_file():
        return Choice((run_dir / best).resolve(), f"the best checkpoint of run {run_dir.name}: epoch "
                                                  f"{record.get('best_epoch')}, {record.get('monitor')} "
                                                  f"{record.get('best_score'):.4f}")
    raise DataError(f"--ckpt_path {run_dir}: this run has no checkpoint with a finite score yet; pass "
                    f"{run_dir / 'checkpoints' / 'last.ckpt'} for its last one")


def find_last(root: Path, flag: str = "--ckpt_path last") -> Choice:
    """The newest run's `last.ckpt`."""
    lasts = [d / "checkpoints" / "last.ckpt" for d in run_dirs(root)]
    lasts = [p for p in lasts if p.is_file()]
    if not lasts:
        other = "a run directory" if flag == "--resume" else "a .ckpt file"
        raise DataError(f"{flag}: no checkpoint under '{root}'; train first with `fit` "
                        f"(or pass --trainer.default_root_dir where your runs are, or {other})")
    newest = max(lasts, key=lambda p: p.stat().st_mtime)
    return Choice(newest, f"the newest run's last checkpoint: {newest}")


def resume_args(args: list[str], homework: str) -> tuple[list[str], Path | None]:
    """`fit --resume [RUN_DIR]` as plain options: the run's own config and its last checkpoint, then the other
    options given (e.g. `--trainer.max_epochs 1000` to train longer). Without RUN_DIR: the newest run."""
    names = [a.partition("=")[0] for a in args]
    if "--resume" not in names:
        return args, None
    i = names.index("--resume")
    value = args[i].partition("=")[2] or None
    rest = args[:i] + args[i + 1:]
    if value is None and i + 1 < len(args) and not args[i + 1].startswith("-") and args[i + 1] != "fit":
        value, rest = args[i + 1], args[:i] + args[i + 2:]
    if "fit" not in rest:
        raise DataError("--resume continues a training run: use it with `fit` (python homework/hwN.py fit --resume)")
    if option(rest, "--ckpt_path") is not None:
        raise DataError("--resume picks the run's last checkpoint itself: drop --ckpt_path (or drop --resume and "
                        "start a new run from --ckpt_path)")
    given_root = option(rest, "--trainer.default_root_dir")
    root = root_dir(homework, given_root[1] if given_root else None)
    run_dir = Path(value) if value else find_last(root, "--resume").path.parents[1]
    last = run_dir / "checkpoints" / "last.ckpt"
    record = own_record(run_dir, homework, "--resume") or {}
    if not last.is_file() or not (run_dir / "config.yaml").is_file():
        raise DataError(f"--resume {run_dir}: not a run directory with checkpoints/last.ckpt and config.yaml")
    longer = any(option(rest, f"--trainer.{key}") is not None for key in ("max_epochs", "max_steps", "max_time"))
    # what the run's last.ckpt holds, which is what resuming continues (run.json's count may be one ahead: a signal
    # between an epoch's end and its checkpoint)
    epochs, done = option(rest, "--trainer.max_epochs"), epochs_done(last)
    done = record.get("epochs") if done is None else done
    if epochs is not None and epochs[1].lstrip("-").isdigit() and isinstance(done, int) and 0 <= int(epochs[1]) <= done:
        raise DataError(f"--trainer.max_epochs {epochs[1]}: run {run_dir.name} has already trained {done} epochs; "
                        f"to train it longer give more (e.g. --trainer.max_epochs {2 * done})")
    if record.get("status") == "finished":
        import yaml

        trainer = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("trainer", {})
        planned = trainer.get("max_epochs")
        limit = next((f"--trainer.{key} {trainer[key]}" for key in ("max_steps", "max_time")
                      if trainer.get(key) not in (None, -1)), None)  # a limit, not early stopping, may have ended it
        if limit is not None and not longer:
            raise DataError(f"--resume: run {run_dir.name} finished at its limit ({limit}); to train it longer: "
                            f"fit --resume {run_dir} {limit.split()[0]} " +
                            ("N (-1: no limit)" if "max_steps" in limit else "DD:HH:MM:SS"))
        if limit is None and planned is not None and record.get("epochs", 0) < planned:
            # early stopping ended it (its early-stopping state comes back too)
            raise DataError(f"--resume: early stopping ended run {run_dir.name} after {record.get('epochs')} of "
                            f"{planned} epochs, and would end it again; start a new fit (e.g. with a larger "
                            f"--early_stopping.patience), or `fit --ckpt_path {last}` to start from its weights")
        if not longer:
            raise DataError(f"--resume: run {run_dir.name} finished (after {record.get('epochs')} epochs); nothing "
                            f"to resume. To train it longer: fit --resume {run_dir} --trainer.max_epochs N")
    if record.get("status") == "stopped" and launched_rank() == 0:  # (SIGKILL, the OOM killer: it said nothing)
        print(f"Resuming run {run_dir.name}, which {STOPPED}, from {last.name} ({saved_at(last)})", flush=True)
    at = rest.index("fit") + 1
    return rest[:at] + ["--config", str(run_dir / "config.yaml"), "--ckpt_path", str(last)] + rest[at:], run_dir


_held: dict[Path, object] = {}  # the locks this process holds (kept here: the CLI object gets pickled for DDP)


def hold(run_dir: Path) -> None:
    """Lock `run_dir` for as long as this process trains in it (the OS drops the lock when the process dies,
    even by SIGKILL): `--resume` refuses a run that is still training elsewhere."""
    from filelock import FileLock, Timeout

    lock = FileLock(run_dir / LOCK)
    try:  # (a second, not 0: a lock won on the file of a run just releasing it is tried again, see `release`)
        lock.acquire(timeout=1)
    except Timeout:
        raise DataError(f"run {run_dir} is still training in another process; wait for it or stop it first") from None
    _held[run_dir] = lock


def release(run_dir: Path) -> None:
    """Unlock `run_dir` and remove its lock file (filelock leaves it), so a finished run keeps no `.training.lock`.

    Removed while still locked, then unlocked: removed after unlocking, another process could have locked the
    file in between and go on training while a third locks a new file of the same name. A process that opened
    the file before the removal and wins its lock after the unlock holds a lock on a removed file, which filelock
    (since 3.20.4) sees (the file has no name left) and discards, trying again on the name."""
    lock = _held.pop(run_dir, None)
    if lock is not None:
        try:
            Path(lock.lock_file).unlink(missing_ok=True)
        finally:
            lock.release()


def describe_split(split: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in split.items() if v is not None) or "no split settings"


def find_best(root: Path, data_dir: Path | None = None, split: dict | None = None, real_data: bool = False) -> Choice:
    """The best-scoring checkpoint among the runs comparable to the newest one: trained on the same data
    directory with the same split settings. `data_dir` / `split` (the settings named on the command line)
    select another group. `real_data`: leave out runs on the generated demo set (to predict real inputs)."""
    records = []
    for run_dir in run_dirs(root):
        record = read_record(run_dir)
        if record is None or record.get("best_checkpoint") is None or record.get("best_score") is None:
            continue
        if real_data and record.get("demo"):
            continue
        path = (run_dir / record["best_checkpoint"]).resolve()
        if path.is_file():
            records.append((run_dir, record, path))
    if not records and real_data and find_best_or_none(root) is not None:
        raise DataError(f"--ckpt_path best: every run under '{root}' was trained on the generated demo data, "
                        f"which says nothing about real inputs; train on your data first (or pass a .ckpt file)")
    if not records:
        raise DataError(f"--ckpt_path best: no run under '{root}' has a checkpoint with a finite score; "
                        f"train first with `fit` (or pass --trainer.default_root_dir where your runs are, "
                        f"or a .ckpt file)")
    newest = max(records, key=lambda r: r[2].stat().st_mtime)
    want_dir = str(data_dir.resolve()) if data_dir is not None else newest[1]["data_dir"]
    want_split = {**newest[1]["split"], **(split or {})}
    comparable = [r for r in records if r[1]["data_dir"] == want_dir and r[1]["split"] == want_split]
    if not comparable:
        suggestion = f"--data.data_dir {newest[1]['data_dir']}" if newest[1]["data_dir"] != want_dir else \
            " ".join(f"--data.{k} {v}" for k, v in newest[1]["split"].items() if want_split.get(k) != v)
        cv = newest[0].parent
        if cv.resolve() != root.resolve():
            suggestion += f" (or --ckpt_path {cv} for the k-fold ensemble)"
        raise DataError(f"--ckpt_path best: no run under '{root}' was trained on '{want_dir}' with "
                        f"{describe_split(want_split)}, so no score compares; the newest run was trained with "
                        f"{suggestion}")
    sign = -1 if comparable[0][1].get("mode") == "max" else 1
    # best score first; between equal scores, the newer checkpoint
    run_dir, record, path = min(comparable, key=lambda r: (sign * r[1]["best_score"], -r[2].stat().st_mtime))
    # a trial of a `tune` study (run.json names them): say which study's best trial this is
    name = (f"trial {record['trial']} of study {record['study']} ({run_dir.parent.name}/{run_dir.name})"
            if record.get("study") is not None and record.get("trial") is not None else run_dir.name)
    if record.get("status") in ("running", "stopped"):  # (its best so far: say the run did not end normally)
        name += f" ({describe_status(record)})"
    return Choice(path, f"the best of {len(comparable)} comparable run(s) (same data and split): {name}, "
                        f"epoch {record['best_epoch']}, {record['monitor']} {record['best_score']:.4f}")


def find_best_or_none(root: Path) -> Choice | None:
    try:
        return find_best(root)
    except DataError:
        return None
