"""Weights & Biases for every run: online when logged in, offline (with the sync command) otherwise,
one W&B run per command, closed quietly so the command's own result stays the last thing printed.

Tracking never stops training: when W&B cannot start (no network, a bad key, a server that does not answer
within `INIT_TIMEOUT`) or fails while writing, the run goes on logging to Lightning's CSVLogger in the run
directory (`<run>/metrics.csv`) and says so in one line. Offline runs never touch the network.

`wandb` is imported only when a run uses it: it costs half a second, which `--help` need not pay.
"""

import netrc
import os
import sys
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.utilities import rank_zero_only

from adapters import started_wandb_run, wandb_init_arguments
from datamodules import disk
from datamodules.errors import DataError

WANDB_LOGGER = "homework.runs.tracking.WandbLogger"
WANDB_LOGGERS = (WANDB_LOGGER, "homework.tracking.WandbLogger",  # (its path before homework/runs/)
                 "pytorch_lightning.loggers.WandbLogger", "pytorch_lightning.loggers.wandb.WandbLogger")
#: Seconds `wandb.init` may take before the run falls back to the CSV log (W&B's own default is 90; set
#: WANDB_INIT_TIMEOUT to change it). A healthy start online takes a few seconds; offline, well under one.
INIT_TIMEOUT = 20.0


class WandbLogger(LightningWandbLogger):
    """Weights & Biases tracking of a run: Lightning's WandbLogger, naming only the settings a student uses.

    Why not Lightning's class directly (it still works: --trainer.logger pytorch_lightning.loggers.WandbLogger):
    to build `--help`, jsonargparse resolves the default logger's signature, and Lightning's imports W&B
    for its type hints: 0.6 s on every `--help`. An explicit signature here keeps W&B out until a run starts.

    Args:
        project: W&B project; the default is ntu-ml-<homework>.
        name: Run name; None: the run directory's name.
        group: Groups runs in the W&B interface, e.g. the folds of one cross-validation.
        tags: Tags of the run (demo runs get demo-data).
        notes: A longer description of the run.
        entity: W&B team or user; None: your default entity.
        offline: Log only to the run directory (upload later with wandb sync); runs are offline anyway
            when W&B is not logged in.
        log_model: Upload checkpoints as W&B artifacts: true at the end of training, "all" as they are saved.
        save_dir: Where W&B writes its files; None: the run directory.
        id: W&B run id to continue, e.g. after a crash; None: a new run.

    When W&B fails (to start, or later to write), this logger hands over to a `CSVLogger` writing
    `<save_dir>/metrics.csv`, says so in one line, and training goes on (see `fall_back`).
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        entity: str | None = None,
        offline: bool = False,
        log_model: bool | Literal["all"] = False,
        save_dir: str | None = None,
        id: str | None = None,  # noqa: A002 (W&B's and Lightning's name)
    ) -> None:
        # Lightning passes resume="allow" to wandb.init: an `id` that exists is continued, else created
        super().__init__(name=name, save_dir=save_dir, offline=offline, project=project, log_model=log_model,
                         group=group, tags=tags, notes=notes, entity=entity, id=id)
        self.fallback: CSVLogger | None = None
        self._trainer: weakref.ref | None = None  # set by `prepare`: whose loggers a failed start swaps

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_trainer": None}  # (spawned processes pickle the logger)

    # --- falling back to a CSV log ------------------------------------------------------------------
    def fall_back(self, problem: str, error: BaseException) -> CSVLogger:
        """From now on log to `<save_dir>/metrics.csv` (Lightning's CSVLogger); say so once, in one line. When
        W&B's folder is full or may not be written (`--trainer.logger.init_args.save_dir` on another disk), the
        line names the file W&B could not write, and the CSV log goes to the run directory instead."""
        if self.fallback is None:
            folder, why = self.save_dir or ".", one_line(error)
            full = disk.os_error(error)
            if full is not None:
                failed = full.filename2 or full.filename  # (a copy's destination: the file being written)
                why = (f"cannot write '{failed}': " if failed else "") + disk.reason(full, Path(failed or folder))
                trainer = self._trainer() if self._trainer is not None else None
                folder = trainer.default_root_dir if trainer is not None else folder
            csv = CSVLogger(folder, name="", version="")
            with warnings.catch_warnings():  # the run directory is not empty (config, W&B's files): expected
                warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
                _ = csv.experiment
            self.fallback = csv
            print(f"W&B {problem} ({why}): logging to {shown(Path(csv.log_dir) / 'metrics.csv')} instead",
                  file=sys.stderr, flush=True)
        return self.fallback

    @property
    def experiment(self) -> Any:
        """The W&B run, started on first use (Lightning does so before `setup`). When it cannot start, the
        trainer's loggers get the CSV logger in this one's place, so callbacks that look for W&B skip it."""
        if self.fallback is not None:
            started = started_wandb_run(self)
            return started if started is not None else self.fallback.experiment
        try:
            return super().experiment
        except Exception as err:  # no network, a bad key, W&B's service not starting, a timeout, ...
            csv = self.fall_back("could not start", err)
            trainer = self._trainer() if self._trainer is not None else None
            if trainer is not None:
                trainer.loggers = [csv if logger is self else logger for logger in trainer.loggers]
            return csv.experiment

    # A write that fails hands over to the CSV logger for the rest of the run. This logger stays in the
    # trainer (callbacks may hold it), forwarding numbers; W&B-only values (images, tables) are dropped:
    # their files are in the run directory anyway.
    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.fallback is None:
            try:
                return super().log_metrics(metrics, step)
            except Exception as err:
                self.fall_back("stopped logging", err)
        numbers = {k: v for k, v in metrics.items()
                   if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)}
        if numbers:
            self.fallback.log_metrics(numbers, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if self.fallback is None:
            try:
                return super().log_hyperparams(params)
            except Exception as err:
                self.fall_back("stopped logging", err)
        self.fallback.log_hyperparams(params)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback) -> None:
        if self.fallback is None:
            try:
                super().after_save_checkpoint(checkpoint_callback)
            except Exception as err:
                self.fall_back("stopped logging", err)

    @rank_zero_only
    def save(self) -> None:
        super().save()
        if self.fallback is not None:
            self.fallback.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self.fallback is None:
            try:
                super().finalize(status)
            except Exception as err:
                self.fall_back("stopped logging", err)
        if self.fallback is not None:
            self.fallback.finalize(status)


def one_line(error: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, cut to `limit` characters."""
    text = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (as the CLI prints run directories)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def logged_in() -> bool:
    """True when W&B has an API key here (env or ~/.netrc): then runs sync online; else offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def configure(trainer: Namespace, run_dir: Path, tags: list[str], resume_id: str | None = None) -> None:
    """Fill in the W&B logger's run-specific settings (or drop the logger under WANDB_MODE=disabled);
    `resume_id`: the W&B run to continue (`fit --resume`)."""
    logger = trainer.logger
    if not isinstance(logger, Namespace) or logger.get("class_path") not in WANDB_LOGGERS:
        return
    if os.environ.get("WANDB_MODE") == "disabled":
        trainer.logger = False
        return
    args = logger.init_args
    if args.get("save_dir") in (None, "."):
        # absolute: W&B's service process outlives a run and may not share our working directory
        args.save_dir = str(run_dir.resolve())
    if args.get("name") is None:
        args.name = run_dir.name
    if resume_id and "id" in args and args.get("id") is None:
        args.id = resume_id
    if tags:
        args.tags = list(args.get("tags") or []) + tags
    if not args.get("offline") and (os.environ.get("WANDB_MODE") == "offline" or not logged_in()):
        args.offline = True


def offline_dir(trainer: Namespace) -> str | None:
    """Where an offline W&B run was written, None when the run is online, not tracked, or W&B did not start."""
    logger = trainer.logger
    if isinstance(logger, Namespace) and logger.get("class_path") in WANDB_LOGGERS and logger.init_args.get("offline"):
        directory = f"{logger.init_args.save_dir}/wandb"
        return directory if any(Path(directory).glob("offline-run-*")) else None
    return None


def prepare(trainer: Trainer) -> None:
    """Before W&B starts: no footer (the command prints its own result and sync hint last), no `anonymous`
    setting, which Lightning passes and W&B now only warns about (there is no public way), a start that
    gives up after `INIT_TIMEOUT` seconds, and our logger told whose loggers to swap if W&B cannot start."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningWandbLogger):
            if trainer.is_global_zero:  # (the other processes of a multi-device run write nothing)
                check_folder(Path(logger.save_dir), Path(trainer.default_root_dir))
            init = wandb_init_arguments(logger)
            init.pop("anonymous", None)
            settings = init.get("settings")
            if settings is None or isinstance(settings, dict):
                settings = dict(settings or {})
                settings.setdefault("silent", True)
                if "WANDB_INIT_TIMEOUT" not in os.environ:  # init settings override W&B's environment
                    settings.setdefault("init_timeout", INIT_TIMEOUT)
                init["settings"] = settings
        if isinstance(logger, WandbLogger):
            logger._trainer = weakref.ref(trainer)


def check_folder(folder: Path, run_dir: Path) -> None:
    """Make W&B's folder (W&B warns when its root does not exist) and, when it is not the run directory (given with
    --trainer.logger.init_args.save_dir), try a write there: a full disk or a folder the user may not write to is
    one line naming it, before training. (W&B would fail in its own process, quietly, and the CSV log meant to take
    over is written to the same folder.) The run directory is checked by the run's own first writes."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve() != run_dir.resolve():
            tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise DataError(f"--trainer.logger.init_args.save_dir {folder}: W&B's folder cannot be written "
                        f"({disk.reason(err, folder)}); give a folder you can write to, or leave the option out "
                        f"(W&B then writes in the run directory)") from None


def run_id(trainer: Trainer | None) -> str | None:
    """The id of the W&B run this trainer logs to (to continue it later with `WandbLogger(id=...)`);
    None when it does not track with W&B, or W&B has not started or could not start."""
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, LightningWandbLogger) and started_wandb_run(logger) is not None:
            return getattr(started_wandb_run(logger), "id", None)
    return None


def finish(trainer: Trainer | None, failed: bool = False) -> None:
    """Close this command's W&B run: else a second command in the same process logs into it. A run that
    cannot close (W&B's service gone, say) is said in one line; its files stay in the run directory."""
    if trainer is None or not any(isinstance(lg, LightningWandbLogger) for lg in trainer.loggers):
        return
    import wandb

    if wandb.run is not None:
        files = Path(wandb.run.dir).parent
        try:
            wandb.finish(exit_code=1 if failed else 0)
        except Exception as err:
            print(f"W&B could not close the run ({one_line(err)}): its files are in {shown(files)}",
                  file=sys.stderr, flush=True)
