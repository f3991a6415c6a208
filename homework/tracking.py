"""Weights & Biases for every run: online when logged in, offline (with the sync command) otherwise,
one W&B run per command, closed quietly so the command's own result stays the last thing printed.

`wandb` is imported only when a run uses it: it costs half a second, which `--help` need not pay.
"""

import netrc
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

WANDB_LOGGER = "homework.tracking.WandbLogger"
WANDB_LOGGERS = (WANDB_LOGGER, "pytorch_lightning.loggers.WandbLogger", "pytorch_lightning.loggers.wandb.WandbLogger")


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
    ) -> None:
        super().__init__(name=name, save_dir=save_dir, offline=offline, project=project, log_model=log_model,
                         group=group, tags=tags, notes=notes, entity=entity)


def logged_in() -> bool:
    """True when W&B has an API key here (env or ~/.netrc): then runs sync online; else offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def configure(trainer: Namespace, run_dir: Path, tags: list[str]) -> None:
    """Fill in the W&B logger's run-specific settings (or drop the logger under WANDB_MODE=disabled)."""
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
    if tags:
        args.tags = list(args.get("tags") or []) + tags
    if not args.get("offline") and (os.environ.get("WANDB_MODE") == "offline" or not logged_in()):
        args.offline = True


def offline_dir(trainer: Namespace) -> str | None:
    """Where an offline W&B run is written, None when the run is online or not tracked."""
    logger = trainer.logger
    if isinstance(logger, Namespace) and logger.get("class_path") in WANDB_LOGGERS and logger.init_args.get("offline"):
        return f"{logger.init_args.save_dir}/wandb"
    return None


def prepare(trainer: Trainer) -> None:
    """Before W&B starts: no footer (the command prints its own result and sync hint last), and no
    `anonymous` setting, which Lightning passes and W&B now only warns about (there is no public way)."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningWandbLogger):
            Path(logger.save_dir).mkdir(parents=True, exist_ok=True)  # W&B warns when its root does not exist
            logger._wandb_init.pop("anonymous", None)
            if logger._wandb_init.get("settings") is None:
                logger._wandb_init["settings"] = {"silent": True}


def finish(trainer: Trainer | None, failed: bool = False) -> None:
    """Close this command's W&B run: else a second command in the same process logs into it."""
    if trainer is None or not any(isinstance(lg, LightningWandbLogger) for lg in trainer.loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
