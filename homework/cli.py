"""The one command line every homework shares: LightningCLI plus this project's training defaults.

Each `homework/hwN.py` calls `run(Model, DataModule, "hwN.yaml", args)`. What it adds to plain
LightningCLI, and why:
- early stopping and best/last checkpointing on the model's `monitor` metric, configurable as
  `--early_stopping.*` / `--checkpoint.*`; the Kaggle writer as `--submission.*`;
- one directory per run under `--trainer.default_root_dir` (config, checkpoints, W&B files,
  learning curve), so runs never overwrite each other's config (a LightningCLI + WandbLogger pitfall);
- W&B online when logged in, offline otherwise, off with `--trainer.logger false` or WANDB_MODE=disabled;
- `--trainer.precision` left unset picks bf16-mixed / 16-mixed / 32-true for the hardware;
- `--ckpt_path best|last` finds the newest run's checkpoint, and the data settings it was trained with;
- user mistakes (DataError, SubmissionError) end in one line on stderr and exit code 2.
"""

import datetime as dt
import logging
import netrc
import os
import shutil
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import wandb
import yaml
from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, Trainer
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from callbacks import KaggleSubmissionWriter, LearningCurvePlot, SubmissionError
from datamodules.base import DataError, available_cpus
from models.base import BaseTask

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "configs"
WANDB_LOGGER = "pytorch_lightning.loggers.WandbLogger"


def auto_precision() -> str:
    """bf16-mixed on GPUs that support it, 16-mixed on other CUDA GPUs, 32-true on the CPU."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def wandb_logged_in() -> bool:
    """True when W&B has an API key here (env or ~/.netrc): then runs sync online; else offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def find_checkpoint(root: Path, which: str) -> Path:
    """The best (or last) checkpoint of the newest run under `root` that saved one."""
    lasts = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise DataError(f"--ckpt_path {which}: no checkpoint under '{root}'; train first with `fit` "
                        f"(or pass --trainer.default_root_dir where your runs are, or a .ckpt file)")
    newest = lasts[-1]
    if which == "last":
        return newest
    best = sorted(newest.parent.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    return best[-1] if best else newest


class RunConfigSaver(SaveConfigCallback):
    """Saves config.yaml in the run's own directory and records the full config on the W&B run."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if stage != "predict":  # predict makes a file, not a run
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, WandbLogger):
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            trainer.logger.log_hyperparams(config)
            # A copy inside the W&B run's files is uploaded with it (W&B keeps its own config.yaml there).
            shutil.copy(Path(trainer.log_dir) / self.config_filename,
                        Path(trainer.logger.experiment.dir) / "lightning_config.yaml")


class HomeworkCLI(LightningCLI):
    """LightningCLI with the project's defaults (see the module docstring)."""

    def __init__(self, model_class: type[BaseTask], datamodule_class: type[LightningDataModule],
                 config_file: str, links: dict[str, str] | None = None, args: ArgsType = None) -> None:
        self.links = links or {}
        self.run_dir: Path | None = None
        with warnings.catch_warnings():  # we pass the command line on purpose, with the default config added
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
            super().__init__(
                model_class, datamodule_class,
                save_config_callback=RunConfigSaver,
                auto_configure_optimizers=False,
                args=self.with_default_config(sys.argv[1:] if args is None else args, CONFIG_DIR / config_file),
            )

    def with_default_config(self, args: list[str], config: Path) -> list[str]:
        """Insert `--config <homework default>` right after the subcommand; the user's flags then override it.

        (Not `default_config_files`: jsonargparse loses the class_path of optimizer callables read that way.)
        """
        args = list(args)
        for i, arg in enumerate(args):
            if arg in self.subcommands():
                return args[: i + 1] + ["--config", str(config)] + args[i + 1:]
        return args

    # --- parsing ------------------------------------------------------------------------------
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(KaggleSubmissionWriter, "submission")
        parser.add_argument("--torch_num_threads", type=int | None, default=None,
                            help="CPU threads torch may use inside one op. None: on the CPU, the cores the data "
                                 "loader workers leave free. 1 is fastest for tiny models such as HW1's MLP.")
        for source, target in self.links.items():
            parser.link_arguments(source, target, apply_on="instantiate")
        model, homework = self.model_class, self.datamodule_class.homework
        parser.set_defaults({
            "early_stopping.monitor": model.monitor, "early_stopping.mode": model.mode,
            "checkpoint.monitor": model.monitor, "checkpoint.mode": model.mode, "checkpoint.save_last": True,
            "checkpoint.filename": "best-{epoch:03d}-{" + model.monitor + ":.4f}",
            "trainer.default_root_dir": f"runs/{homework}",
            "trainer.logger": {"class_path": WANDB_LOGGER, "init_args": {"project": f"ntu-ml-{homework}"}},
        })

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        config = self.config.get(sub) if sub else None
        if config is None or config.get("ckpt_path") is None:
            return
        ckpt_path = str(config.ckpt_path)
        if ckpt_path in ("best", "last"):
            ckpt_path = str(find_checkpoint(Path(config.trainer.default_root_dir), ckpt_path))
            config.ckpt_path = ckpt_path
        if not Path(ckpt_path).is_file():
            raise DataError(f"--ckpt_path: checkpoint '{ckpt_path}' does not exist")
        print(f"Using checkpoint {ckpt_path}", file=sys.stderr)
        # Model settings come from the checkpoint (LightningCLI does that next); so must the data's.
        try:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated download, a file that is no checkpoint, ...
            raise DataError(f"--ckpt_path {ckpt_path}: not a readable checkpoint ({type(err).__name__})") from None
        saved = checkpoint.get("datamodule_hyper_parameters", {})
        for key, value in saved.items():
            if key.startswith("_") or key not in config.data:
                continue
            if key not in self.datamodule_class.runtime_args or config.data[key] is None:  # e.g. data_dir
                config.data[key] = value

    # --- instantiation ------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        trainer = config.trainer
        if trainer.precision is None:
            trainer.precision = auto_precision()
        demo = self.datamodule_class.will_use_demo(config.data.data_dir)
        if self.subcommand == "predict":
            trainer.logger = False  # predict writes a Kaggle file, there is nothing to track
        else:
            self.run_dir = self._new_run_dir(Path(trainer.default_root_dir), demo)
        if config.checkpoint.dirpath is None:
            if self.subcommand != "fit" and config.get("ckpt_path"):  # evaluating: nothing is saved, and
                config.checkpoint.dirpath = str(Path(config.ckpt_path).parent)  # Lightning warns if it moved
            elif self.run_dir is not None:
                config.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        self._configure_wandb(trainer, demo)

    def after_instantiate_classes(self) -> None:
        self._set_cpu_threads(self.config[self.subcommand].torch_num_threads)
        if self.subcommand == "fit":
            self.model.check_trainer(self.trainer)  # before Lightning starts processes or raises its own traceback

    def _set_cpu_threads(self, threads: int | None) -> None:
        """On the CPU, leave the data loader workers their cores: oversubscribed OpenMP threads
        spin-wait on each other (on a busy 2-core machine, 2 threads trained a CNN over 10x slower than 1)."""
        if threads is None:
            workers = getattr(self.datamodule, "num_workers", 0) or 0
            if not workers or not isinstance(self.trainer.accelerator, CPUAccelerator):
                return
            threads = max(1, available_cpus() - workers)
        if torch.get_num_threads() != threads:
            log.info("torch uses %d CPU thread(s) per op", threads)
            torch.set_num_threads(threads)

    def _new_run_dir(self, root: Path, demo: bool) -> Path:
        stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        name = f"{stamp}_{self.subcommand}" + ("_demo" if demo else "")
        run_dir, n = root / name, 1
        while run_dir.exists():
            run_dir, n = root / f"{name}-{n}", n + 1
        return run_dir

    def _configure_wandb(self, trainer: Namespace, demo: bool) -> None:
        logger = trainer.logger
        if not isinstance(logger, Namespace) or logger.get("class_path") != WANDB_LOGGER:
            return
        if os.environ.get("WANDB_MODE") == "disabled":
            trainer.logger = False
            return
        args = logger.init_args
        if args.get("save_dir") in (None, "."):
            # absolute: W&B's service process outlives a run and may not share our working directory
            args.save_dir = str(self.run_dir.resolve())
        if args.get("name") is None:
            args.name = self.run_dir.name
        if demo:
            args.tags = list(args.get("tags") or []) + ["demo-data"]
        if not args.get("offline") and (os.environ.get("WANDB_MODE") == "offline" or not wandb_logged_in()):
            args.offline = True

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config_init[self.subcommand]
        logger = self.config[self.subcommand].trainer.logger
        if isinstance(logger, Namespace) and logger.init_args.get("offline"):
            wandb_dir = f"{logger.init_args.save_dir}/wandb"
            print(f"W&B: not logged in, so this run is logged offline in {wandb_dir} "
                  f"(upload it later with `wandb sync {wandb_dir}/offline-run-*`).", file=sys.stderr)
        extra = [LearningCurvePlot()] if self.subcommand == "fit" else []
        if config.trainer.get("logger"):
            extra.append(LearningRateMonitor())
        callbacks = config.trainer.get("callbacks") or []
        config.trainer.callbacks = (callbacks if isinstance(callbacks, list) else [callbacks]) + extra
        if self.run_dir is not None:
            kwargs["default_root_dir"] = str(self.run_dir)
        return super().instantiate_trainer(**kwargs)

    def _finish_wandb_run(self) -> None:
        """One command, one W&B run: without this a second fit in the same process logs into the first's run."""
        if isinstance(self.trainer.logger, WandbLogger) and wandb.run is not None:
            wandb.finish()

    after_validate = after_test = _finish_wandb_run

    def before_fit(self) -> None:
        self.datamodule.check_test_data()  # a broken test file is found now, not after hours of training

    def before_test(self) -> None:
        if not self.datamodule.has_test_labels:
            raise DataError(f"{self.datamodule_class.homework}'s test set has no labels (Kaggle keeps them), so "
                            f"`test` has nothing to score; `validate` scores the validation split")

    def after_predict(self) -> None:
        """The file written and the submit command, printed once the progress bar is gone."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, KaggleSubmissionWriter) and callback.summary:
                print(callback.summary)

    def after_fit(self) -> None:
        """Say what came out and what to do next: the score a student compares, and the predict command."""
        ckpt = self.trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_score is not None and self.trainer.is_global_zero:
            self._warn_if_diverged(ckpt)
            if torch.isfinite(ckpt.best_model_score):
                print(f"\nBest {ckpt.monitor} = {float(ckpt.best_model_score):.4f} ({Path(ckpt.best_model_path).name})"
                      f"\nRun directory: {self.run_dir}"
                      f"\nNext: python homework/{self.datamodule_class.homework}.py predict --ckpt_path best")
        self._finish_wandb_run()

    def _warn_if_diverged(self, ckpt: ModelCheckpoint) -> None:
        """Early stopping ends a run whose metric turns NaN/inf; say so in words a student acts on."""
        current = self.trainer.callback_metrics.get(ckpt.monitor)
        if current is None or torch.isfinite(current):
            return
        best = ("no epoch had a finite score, so no checkpoint is worth predicting with"
                if not torch.isfinite(ckpt.best_model_score) else "the best checkpoint is from before that")
        print(f"\nwarning: training diverged: {ckpt.monitor} became {float(current)} after "
              f"{self.trainer.current_epoch} epoch(s) and early stopping ended the run; {best}. "
              f"Try a smaller learning rate (--model.optimizer.lr). Run directory: {self.run_dir}", file=sys.stderr)


def run(model_class: type[BaseTask], datamodule_class: type[LightningDataModule], config_file: str,
        args: ArgsType = None, links: dict[str, str] | None = None) -> HomeworkCLI:
    """Build and run the CLI; a user mistake ends in one line on stderr and exit code 2."""
    try:
        return HomeworkCLI(model_class, datamodule_class, config_file, links=links, args=args)
    except (DataError, SubmissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
