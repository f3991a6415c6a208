"""The one command line every homework shares: LightningCLI plus this project's training defaults.

Each `homework/hwN.py` calls `run(Model, DataModule, "hwN.yaml", args)` (through its `HOMEWORK`). A command:
1. parse: the homework's YAML is the parser's defaults, so `--help` tells the truth; mistakes are one
   line with a suggestion; a class named on the command line starts from its own defaults (cli/arguments.py);
2. find the checkpoint: `--ckpt_path best` is the best comparable run, `last` the newest, a run directory its
   best (homework/runs/); the checkpoint must be this homework's, and brings back its data settings
   (runs/checkpoints.py); `fit --resume` continues a run in its own directory with its own config;
3. build: a fresh run directory, locked while it trains, W&B online or offline (runs/tracking.py), precision and
   CPU threads for the machine (cli/hardware.py), early stopping and best/last checkpoints on the model's
   `monitor`, written atomically, with the RNG states that make a resumed run exact (callbacks/);
4. run, and say what came out last: the diagnosis (lab/advisor.py), the score, the run directory, the next
   command (homework/command_line.py; a fit without a best checkpoint, or interrupted: cli/report.py).
A run that fails before its first checkpoint leaves nothing behind. Commands of several runs (compare, tune,
diagnose, `--data.fold all`) are rows of cli/commands.py; `fit --find_lr / --find_batch_size / --plot_schedule`
run a finder instead of training (lab/finders.py). Several devices: only process 0 makes directories and speaks.
"""

import copy
import os
import signal
import sys
import warnings
from pathlib import Path

import torch
from jsonargparse import ArgumentError
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningDataModule, Trainer
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
from pytorch_lightning.plugins.io import CheckpointIO
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback

from callbacks import (AtomicCheckpointIO, HomeworkCheckpoint, KaggleSubmissionWriter, LearningCurvePlot,
                       ReproducibleEpochs, StopOnCtrlC, StopOnNonFiniteLoss, SubmissionError,
                       launched_processes_ignore_ctrl_c)
from callbacks import interrupt
from datamodules.atomic import write_atomically
from datamodules.console import redraws
from datamodules.base import HomeworkDataModule
from datamodules import disk
from datamodules.errors import DataError
from datamodules.workspace import elsewhere
import adapters
from homework import runs
from homework.runs import launched_rank
from homework.cli import arguments, commands, hardware, report
from homework.cli.arguments import CONFIG_DIR
from homework.lab import advisor, finders
from homework.runs import checkpoints, kfold, limits, tracking
from homework.cli.output import EpochLines, command, fail, silence_known_noise
from models.base import BaseTask

RUN_DIR_ENV = "NTU_ML_RUN_DIR"  # the run directory, for the other processes of a multi-device fit
EVALUATING = ("validate", "test", "predict", "critical")  # commands that read a trained model


def user_interrupt(error: BaseException) -> bool:
    """Ctrl-C: a KeyboardInterrupt, or the `sys.exit(1)` that Lightning's graceful shutdown raises while
    handling one (in `pytorch_lightning.trainer.call._call_and_handle_interrupt`)."""
    return isinstance(error, KeyboardInterrupt) or (isinstance(error, SystemExit)
                                                    and isinstance(error.__context__, KeyboardInterrupt))


class HomeworkTrainer(Trainer):
    """Lightning's Trainer plus the commands of one model that homework/cli/commands.py lists (LightningCLI makes
    a subcommand of each method)."""


for _name, _method in commands.trainer_methods().items():
    setattr(HomeworkTrainer, _name, _method)


class RunConfigSaver(SaveConfigCallback):
    """Saves `config.yaml` in the run's directory (as the user configured it: re-running it makes a new
    run) and records the full config on the W&B run.

    Written here, not by Lightning's `setup` (`save_to_log_dir` is off): that writes into `trainer.log_dir`, the
    first logger's folder, which is the run directory only while W&B's `save_dir` is left alone; given one
    (`--trainer.logger.init_args.save_dir ~/wandb`), it replaced a `config.yaml` of the user's there and left the
    run without the config `--resume` reads."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # evaluating makes no run directory
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        from pytorch_lightning.loggers import WandbLogger

        config = self.parser.dump(self.config, skip_none=False)
        write_atomically(Path(trainer.default_root_dir) / self.config_filename, config)  # (process 0 only)
        if isinstance(trainer.logger, WandbLogger):
            import yaml

            trainer.logger.log_hyperparams(yaml.safe_load(config))
            # a copy inside the W&B run's files is uploaded with it (W&B keeps its own config.yaml there).
            # Not read back from `trainer.log_dir`: that is a broadcast, and this runs on process 0 only, so
            # under DDP process 0 waited forever in the next collective (ModelCheckpoint.setup) for the others
            (Path(trainer.logger.experiment.dir) / "lightning_config.yaml").write_text(config)


class HomeworkCLI(LightningCLI):
    """LightningCLI with the project's defaults (see the module docstring)."""

    def __init__(self, model_class: type[BaseTask], datamodule_class: type[HomeworkDataModule],
                 config_file: str, links: dict[str, str] | None = None, args: ArgsType = None) -> None:
        self.links = links or {}
        self.defaults = arguments.config_defaults(CONFIG_DIR / config_file)
        self.args = list(sys.argv[1:] if args is None else args)
        # `fit --resume [RUN_DIR]`: that run's config and last checkpoint, continued in its directory
        self.args, self.resume_dir = runs.resume_args(self.args, datamodule_class.homework)
        # printed by us after the config is complete (jsonargparse prints it mid-parse, before the reset below)
        self.print_config = [a for a in self.args if a.split("=")[0] == "--print_config"]
        self.args = [a for a in self.args if a not in self.print_config]
        self.run_dir: Path | None = None
        self.tuned = False  # fit --find_lr / --find_batch_size / --plot_schedule ran instead of training
        self.holds_run_dir = False  # this process locked the run directory (runs.hold) while training in it
        self.record: runs.RunRecord | None = None
        self.fold_checkpoints: list[Path] = []  # predict with a cross-validation directory: the folds' best
        self.advice: str | None = None  # fit: the advisor's diagnosis, as printed
        # no prefixes: argparse would take --data.normaliz for --data.normalize, and a typo silently sets something
        no_exit = {"exit_on_error": False, "allow_abbrev": False}
        try:
            with warnings.catch_warnings():  # we pass the command line on purpose
                warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
                super().__init__(model_class, datamodule_class, save_config_callback=RunConfigSaver,
                                 trainer_class=HomeworkTrainer,
                                 # a resumed run's config is the updated one; written by RunConfigSaver itself
                                 save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
                                 auto_configure_optimizers=False, args=self.args,
                                 parser_kwargs={**no_exit, "description": commands.describe(),
                                                "formatter_class": commands.KeepLines,
                                                # (a dict each: Lightning sets its description in it)
                                                **{name: {**no_exit, "description": commands.summary(name)}
                                                   for name in self.subcommands()}})
        except BaseException as err:  # a failed or interrupted command: its W&B run closed, its record says so
            interrupted = user_interrupt(err)
            if interrupted:
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C stops at once
            full_disk = disk.problem(err)  # a full disk, a read-only folder: the user's condition, one line
            tracking.finish(getattr(self, "trainer", None), failed=True)
            trainer = getattr(self, "trainer", None)  # (none when the Trainer itself refused the options)
            if self.record is not None and trainer is not None and not (
                    interrupted and self.record.record["status"] == "finished"):
                self.record.finish(trainer, "interrupted" if interrupted else "failed", error=full_disk)
            discarded = False
            if self.resume_dir is None and self.holds_run_dir:  # (only the process that made it)
                # a run that failed before its first checkpoint leaves nothing
                discarded = runs.discard_if_empty(self.run_dir)
            if interrupted:
                report.say_interrupted(self, discarded)
                raise SystemExit(interrupt.exit_code()) from None  # a shell's code: 130 Ctrl-C, 143 SIGTERM
            if full_disk is not None:
                raise DataError(full_disk + report.resume_hint(self)) from None
            if hardware.out_of_memory(err) or hardware.worker_killed(err):
                raise DataError(self._machine_gave_out(err, discarded)) from None
            too_few = limits.refused(err)  # a batch limit the data cannot satisfy (Lightning's traceback)
            if too_few is not None:
                raise DataError(too_few) from None
            quiet = interrupt.quiet_exit_code()  # another process, stopped by a signal: process 0 says it all
            if quiet is not None:
                raise SystemExit(quiet) from None
            raise
        finally:
            if self.holds_run_dir:
                runs.release(self.run_dir)
                os.environ.pop(RUN_DIR_ENV, None)

    def _machine_gave_out(self, err: BaseException, discarded: bool) -> str:
        """CUDA out of memory or a killed data-loader worker, in one line: what ran out, what was kept, what to
        try, and for a fit with an epoch done the command that continues it."""
        name = getattr(self, "subcommand", None) or "the command"
        config = getattr(self, "config", None)
        config = config[name] if config is not None and name in config else None
        kept, last = "", None
        if name == "fit" and self.run_dir is not None:
            last = self.run_dir / "checkpoints" / "last.ckpt"
            kept = (f"; kept {last} ({runs.saved_at(last)})" if last.is_file() and not discarded else
                    "; nothing was kept (no checkpoint yet)")
        if hardware.worker_killed(err):
            why = " ".join(str(err).split()).split(". ")[0]
            line, options = (f"{name}: a data-loader worker died ({why}; on Colab and Kaggle usually their small "
                             f"shared memory){kept}. Run with --data.num_workers 0 (batches built in the main "
                             f"process)"), ["--data.num_workers", 0]
        else:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # (a notebook's next call starts with the memory free)
            if config is None:
                return f"{name} ran out of GPU memory: {' '.join(str(err).split())[:200]}"
            used, tries, options = hardware.memory_remedy(name, config.data, self.datamodule_class.memory_args,
                                                          config.trainer.get("accumulate_grad_batches"),
                                                          config.trainer.get("precision"))
            line = f"{name} ran out of GPU memory (CUDA out of memory) with {used}{kept}. Try {tries}"
        if last is not None and last.is_file() and not discarded:
            line += f". Continue: {command(self.datamodule_class.homework, 'fit', '--resume', self.run_dir, *options)}"
        return line

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), **{name: {"model", "datamodule"} for name in commands.trainer_methods()}}

    # --- 1. parse -------------------------------------------------------------------------------
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.add_lightning_class_args(HomeworkCheckpoint, "checkpoint")
        parser.add_lightning_class_args(KaggleSubmissionWriter, "submission")
        parser.add_argument("--torch_num_threads", type=int | None, default=None,
                            help="CPU threads torch may use inside one op. None: on the CPU, the cores the data "
                                 "loader workers leave free. 1 is fastest for tiny models such as HW1's MLP.")
        parser.add_argument("--diagnose", type=bool, default=True,
                            help="fit: after training, compare with a simple reference model fitted on the same "
                                 "training split and print the course's diagnosis (model bias, optimization, "
                                 "overfitting) with the flags to try.")
        parser.add_argument("--find_lr", type=bool, default=False,
                            help="fit: instead of training, run Lightning's learning-rate range test, save "
                                 "lr_find.png in the run directory and print the command that trains with the "
                                 "suggested learning rate.")
        parser.add_argument("--plot_schedule", type=bool, default=False,
                            help="fit: instead of training, draw the configured learning-rate schedule over every "
                                 "optimizer step of the fit (schedule.png in the run directory).")
        parser.add_argument("--find_batch_size", type=bool, default=False,
                            help="fit: instead of training, find the largest batch size that fits in memory (for "
                                 "GPUs) and print the command that trains with it.")
        for source, target in self.links.items():
            parser.link_arguments(source, target, apply_on="instantiate")
        model, homework = self.model_class, self.datamodule_class.homework
        parser.set_defaults({
            "early_stopping.monitor": model.monitor, "early_stopping.mode": model.mode,
            # checked when validation ends, not when a training epoch does: a fit that stops before validating
            # (`--trainer.max_steps 3`) has nothing to check, rather than a missing-metric traceback
            "early_stopping.check_on_train_epoch_end": False,
            "checkpoint.monitor": model.monitor, "checkpoint.mode": model.mode, "checkpoint.save_last": True,
            "checkpoint.filename": "best-{epoch:03d}-{" + model.monitor + ":.4f}",
            "trainer.default_root_dir": f"runs/{homework}",
            "trainer.logger": {"class_path": tracking.WANDB_LOGGER, "init_args": {"project": f"ntu-ml-{homework}"}},
        })
        parser.set_defaults(self.defaults)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        arguments.tidy_help(parser, HomeworkTrainer, {c: commands.summary(c) for c in self.subcommands()},
                            commands.usage())
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            command = commands.command_word(self.args)
            subparser = adapters.subcommand_parser(parser, command)
            configs = [v for k, v in zip(self.args, self.args[1:]) if k == "--config"]
            raise DataError(arguments.one_line(str(err), subparser or parser, configs)) from None
        command = self.config.get("subcommand")
        if command is None:
            return
        config = self.config[command]
        trainer = config.trainer  # `runs/hwN` (the default) is in the home folder, not always the working directory
        trainer.default_root_dir = str(runs.root_dir(self.datamodule_class.homework, trainer.default_root_dir))
        if command == "fit":
            arguments.check_training_length(config.trainer)
            arguments.check_schedule_length(config)
        after = self.args[self.args.index(command) + 1:]
        arguments.reset_switched_classes(config, after, self.defaults)
        self._resolve_checkpoint(command, config)
        if self.print_config:
            print(adapters.command_parser(self, command).dump(config, skip_none=False), end="")
            raise SystemExit(0)

    def _resolve_checkpoint(self, command: str, config) -> None:
        """`best`/`last`/a file/a cross-validation directory -> one checkpoint file, and its data settings."""
        ckpt = config.get("ckpt_path")
        if ckpt is None:
            if command in EVALUATING:
                raise DataError(f"`{command}` needs a trained model: pass --ckpt_path best (the best-scoring "
                                f"comparable run), --ckpt_path last (the newest run) or a .ckpt file")
            return
        root, data = Path(config.trainer.default_root_dir), config.data
        if ckpt == "last":
            choice = runs.find_last(root)
        elif ckpt == "best":
            choice = self._find_best(command, root, data)
        elif runs.is_run_dir(Path(ckpt)):
            choice = runs.run_checkpoint(Path(ckpt), self.datamodule_class.homework)
        elif Path(ckpt).is_dir() and command == "predict":
            self.fold_checkpoints = kfold.fold_checkpoints(Path(ckpt))
            choice = runs.Choice(self.fold_checkpoints[0], f"the {len(self.fold_checkpoints)} folds' best "
                                                           f"checkpoints in {ckpt}, predictions averaged")
        elif not Path(ckpt).is_file():
            raise DataError(f"--ckpt_path: checkpoint '{ckpt}' does not exist")
        else:
            choice = runs.Choice(Path(ckpt), str(ckpt))
        config.ckpt_path = str(choice.path)
        if launched_rank() == 0:
            print(f"Using {choice.reason}", file=sys.stderr)
        saved = checkpoints.load(choice.path)
        checkpoints.check_homework(saved, choice.path, self.datamodule_class.homework, self.model_class)
        checkpoints.restore_data_settings(saved, data, self.datamodule_class.runtime_args, self._named_data_settings(),
                                          choice.path)

    def _named_data_settings(self) -> set[str]:
        """The data settings named on the command line (`--data.seed 1` -> seed)."""
        return {a.partition("=")[0][len("--data."):] for a in self.args if a.startswith("--data.")}

    def _find_best(self, command: str, root: Path, data) -> runs.Choice:
        """Among the runs comparable to the newest, or to the data directory and split named on the command line."""
        named = self._named_data_settings()
        split = {k: v for k, v in self.datamodule_class.split_settings(data).items() if k in named}
        data_dir = self.datamodule_class.resolved_dir(data.data_dir) if "data_dir" in named else None
        try:
            return runs.find_best(root, data_dir, split)
        except DataError:
            if command != "predict" or data_dir is None:
                raise
        # predicting new inputs (a folder that was never trained on): the best comparable model
        choice = runs.find_best(root, None, split)
        return runs.Choice(choice.path, f"{choice.reason}, to predict the inputs in '{data.data_dir}'")

    # --- 3. build -------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        self.saved_config = copy.deepcopy(config)  # config.yaml: what the user set, no paths pinned to this run
        for mode in ("find_lr", "find_batch_size", "plot_schedule", "print_config"):  # re-running it trains
            if mode in self.saved_config:
                self.saved_config[mode] = False
        trainer, data = config.trainer, config.data
        self._choose_devices(trainer, data)
        if self.subcommand != "fit" and config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(Path(config.ckpt_path).parent)  # Lightning warns when it moved
        if self.subcommand in EVALUATING:
            trainer.logger = False  # evaluating prints scores or writes a file: no run to track or keep
            return
        demo = self.datamodule_class.will_use_demo(data.data_dir)
        tags = runs.fold_tag(data.get("num_folds"), data.get("fold")) + (["demo"] if demo else [])
        rank = launched_rank()
        if rank > 0:  # another process of a multi-device fit: rank 0 made the directory (and writes in it)
            self.run_dir = Path(os.environ.get(RUN_DIR_ENV) or Path(trainer.default_root_dir) / f".rank{rank}")
        else:
            self.run_dir = self.resume_dir or runs.new_run_dir(Path(trainer.default_root_dir), self.subcommand, tags)
            runs.hold(self.run_dir)
            self.holds_run_dir = True
            os.environ[RUN_DIR_ENV] = str(self.run_dir)  # inherited by the processes Lightning starts for DDP
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        wandb_id = (runs.read_record(self.run_dir) or {}).get("wandb_id") if self.resume_dir else None
        tracking.configure(trainer, self.run_dir, ["demo-data"] if demo else [], wandb_id)

    def _choose_devices(self, trainer, data) -> None:
        """Several GPUs only when asked; the precision from each GPU's compute capability; one line says so."""
        homework = self.datamodule_class.homework
        name = next(iter(self.datamodule_class.memory_args), None)
        batch = (name, data.get(name)) if name in data else None
        said = [hardware.one_gpu_unless_asked(trainer, batch, self.subcommand)]
        refused = hardware.several_in_a_kernel(trainer, homework)
        if refused:
            raise DataError(refused)
        if self.subcommand == "fit":
            said.append(hardware.several_gpus(trainer, batch))
        if trainer.precision is None:
            trainer.precision, why = hardware.choose_precision(trainer)
            said.append(why)
        if launched_rank() == 0:
            for line in filter(None, said):
                print(line, file=sys.stderr, flush=True)

    def instantiate_classes(self) -> None:
        """Argument errors found while building the model, data or trainer are one line too."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            raise DataError(f"{err}") from None

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config_init[self.subcommand]
        first, extra = [StopOnCtrlC()], []  # (first: on Ctrl-C, before other callbacks take seconds to shut down)
        if self.subcommand == "fit":
            dm = self.datamodule
            self.record = runs.RunRecord(self.run_dir, dm.homework, dm.data_dir, dm.is_demo,
                                         dm.split_settings(dm.hparams))
            if self.resume_dir:
                self.record.resume()
            first.append(self.record)  # run.json says "interrupted" before a second Ctrl-C can cut the shutdown short
            extra += [LearningCurvePlot(), ReproducibleEpochs(), StopOnNonFiniteLoss()]
        if config.trainer.get("logger"):
            extra.append(LearningRateMonitor())
        if config.trainer.get("enable_progress_bar") is None and not redraws():
            # piped to a file or in a notebook: one line per epoch, not a redrawn bar (an explicit
            # --trainer.enable_progress_bar true keeps Lightning's bar, false shows none)
            extra.append(EpochLines())
        callbacks = config.trainer.get("callbacks") or []
        config.trainer.callbacks = first + (callbacks if isinstance(callbacks, list) else [callbacks]) + extra
        if self.run_dir is not None:
            kwargs["default_root_dir"] = str(self.run_dir)
        plugins = config.trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = plugins + [AtomicCheckpointIO()]  # a kill while saving keeps the previous file
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError, ImportError) as err:
            # the Trainer refused the machine's options (no GPU, devices 0, an unknown strategy): one line
            raise DataError(hardware.refused(err, config.trainer)) from None
        for callback in trainer.callbacks:
            if isinstance(callback, RunConfigSaver):
                callback.config = self.saved_config
        return trainer

    def after_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        hardware.set_cpu_threads(self.trainer, getattr(self.datamodule, "num_workers", 0) or 0,
                                 config.torch_num_threads)
        tracking.prepare(self.trainer)
        launched_processes_ignore_ctrl_c(self.trainer)  # on Ctrl-C, process 0 ends them (callbacks/interrupt.py)
        if adapters.spawns_processes(self.trainer):  # ddp_spawn, ddp_fork, ddp_notebook
            strategy = config.trainer.strategy
            strategy = strategy if isinstance(strategy, str) else type(self.trainer.strategy).__name__
            if adapters.interactive():  # a notebook's kernel, where Lightning forks even for `auto` and refuses ddp
                devices = config.trainer.devices
                raise DataError(f"--trainer.devices {devices}: in a notebook's kernel Lightning runs several devices "
                                f"only as forked processes, which hand back just the weights, so the run's record, "
                                f"best checkpoint and results would be lost. Run it as a command in a cell: !python "
                                f"homework/{self.datamodule_class.homework}.py {self.subcommand} --trainer.devices "
                                f"{devices} (DDP), or use one device here")
            raise DataError(f"--trainer.strategy {strategy}: its processes hand back only the weights, "
                            f"so the run's record, best checkpoint and results would be lost; use --trainer.strategy "
                            f"ddp (the same training, one process per device)")
        if self.subcommand == "fit":
            self.model.check_trainer(self.trainer)  # before Lightning starts processes or raises its own traceback
            self.model.check_optimizer()

    # --- 4. run and say what came out ---------------------------------------------------------
    def before_fit(self) -> None:
        self.datamodule.check_test_data()  # a broken test file is found now, not after hours of training

    def fit(self, model, datamodule, **kwargs) -> None:
        config = self.config[self.subcommand]
        if config.find_lr or config.find_batch_size or config.plot_schedule:  # instead of training: lab/finders.py
            self.tuned = True
            # the next command trains this run's own config (saved with the finders off), plus what they found
            finders.run(self.trainer, model, datamodule, self.run_dir, config.find_lr, config.find_batch_size,
                        command(self.datamodule_class.homework, "fit", "--config", self.run_dir / "config.yaml"),
                        config.plot_schedule)
            return
        self.trainer.fit(model, datamodule=datamodule, **kwargs)

    def before_test(self) -> None:
        self.datamodule.check_test_labels()  # refused, saying why, where the test set has nothing to score

    def predict(self, model, datamodule, ckpt_path: str | None = None, **kwargs) -> None:
        if self.fold_checkpoints:
            kfold.predict_averaged(self.trainer, model, datamodule, self.fold_checkpoints)
        else:
            self.trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)

    def after_fit(self) -> None:
        """The score a student compares, where the run is, and the next command: the last lines printed."""
        ckpt, trainer = self.trainer.checkpoint_callback, self.trainer
        status = "tuned" if self.tuned else "interrupted" if trainer.interrupted else "finished"
        self.record.finish(trainer, status)
        advice = self.advice = None
        if not self.tuned and self.config[self.subcommand].diagnose and trainer.is_global_zero:
            advice = self.advice = advisor.advise(trainer, self.model, self.datamodule, self.record)
            for logger in trainer.loggers if advice else []:
                if hasattr(logger, "log_text"):
                    logger.log_text(key="diagnosis", columns=["diagnosis"], data=[[advice]])
        tracking.finish(trainer)
        if self.tuned:
            return
        if not trainer.is_global_zero:
            return
        offline = tracking.offline_dir(self.config[self.subcommand].trainer)
        if offline:
            print(f"W&B: logged offline; upload with `wandb sync {offline}/offline-run-*`")
        if ckpt is None or ckpt.best_model_score is None:
            report.say_no_best(self, ckpt)
            return
        report.warn_if_diverged(self, ckpt)
        if not torch.isfinite(ckpt.best_model_score):
            return
        if advice:
            print(advice)
        record = self.record.record
        stopper = trainer.early_stopping_callback
        if stopper is not None and stopper.stopped_epoch:
            print(f"Early stopping after epoch {stopper.stopped_epoch}: {stopper.monitor} had not improved for "
                  f"{stopper.patience} epochs")
        print(f"Best {ckpt.monitor} = {float(ckpt.best_model_score):.4f} at epoch {record['best_epoch']} "
              f"({Path(ckpt.best_model_path).name})\nRun directory: {self.run_dir}")
        # the run itself, not `best`: the model just trained, whatever other runs scored (it brings its data settings)
        print(f"Next: {command(self.datamodule_class.homework, 'predict', '--ckpt_path', self.run_dir)}")

    def after_validate(self) -> None:
        scores = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val_")}
        print("Validation split: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))

    def after_test(self) -> None:
        scores = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("test_")}
        print("Test set: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))

    def after_predict(self) -> None:
        """The file written and what to do with it, printed once the progress bar is gone."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, KaggleSubmissionWriter) and callback.summary:
                print(callback.summary)


def execute(model_class: type[BaseTask], datamodule_class: type[LightningDataModule], config_file: str,
            args: list[str], links: dict[str, str] | None = None):
    """Run the command `args` asks for; a user mistake raises DataError or SubmissionError (the Python API,
    homework/cli/api.py, turns it into its own exception, the command line into one line and exit code 2)."""
    silence_known_noise()
    note = elsewhere()  # run from another folder: say where runs/ and data/ are
    if note and launched_rank() == 0 and args and not {"-h", "--help"} & set(args) and \
            not any(a.startswith("--print_config") for a in args):
        print(note, file=sys.stderr, flush=True)
    return commands.dispatch(args, lambda a: HomeworkCLI(model_class, datamodule_class, config_file, links, a),
                             model_class, datamodule_class)


def run(model_class: type[BaseTask], datamodule_class: type[LightningDataModule], config_file: str,
        args: ArgsType = None, links: dict[str, str] | None = None) -> HomeworkCLI | list[HomeworkCLI]:
    """Build and run the CLI; a user mistake ends in one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if args is None else args)
    previous = interrupt.stop_on_signals(launched_rank())  # SIGTERM (Kaggle, Colab, SLURM, `timeout`): as Ctrl-C
    try:
        return execute(model_class, datamodule_class, config_file, args, links)
    except (DataError, SubmissionError) as err:
        fail(str(err))
    except OSError as err:  # a full disk or a read-only folder outside a fit (a study's journal, compare's files)
        if disk.problem(err) is None:
            raise
        fail(disk.problem(err))
    finally:
        interrupt.restore_signals(previous)
