"""The Python API: every command of a homework as a function, for notebooks and scripts (docs/notebooks.md).

    from homework import hw1
    result = hw1.fit(max_epochs=20, model={"optimizer": {"lr": 1e-3}})
    hw1.predict(ckpt_path=result)      # result.submission: the file to hand in

Each homework module exports `fit`, `validate`, `test`, `predict`, `critical`, `compare`, `diagnose` and `tune`.
They take the command line's options, as

- keyword arguments: `trainer={"max_epochs": 3}` (nested dicts), `trainer__max_epochs=3` (`__` for the dot), or
  the shortcuts `max_epochs`, `max_steps` and `data_dir` (`--trainer.max_epochs`, `--trainer.max_steps`,
  `--data.data_dir`); `ckpt_path=` also takes the `Result` of an earlier call (its run);
- positional dicts with dotted names, `{"trainer.max_epochs": 3}`, or command-line text, `"--trainer.max_epochs 3"`
  (split as a shell would) or a list of its words;

and return a `Result` naming the run directory, the best score and checkpoint and the submission file. The command
prints what it prints on the command line, with one line per epoch (a notebook shows no redrawn bar). A user
mistake raises `HomeworkError`, whose message is the command line's one `error:` line; Ctrl-C (a notebook's
interrupt) raises KeyboardInterrupt (shown as one line) once the run has said what it kept, with the call that
continues it. In a notebook what it prints as information goes to stdout (Jupyter draws stderr red). A call leaves
no state behind in the process: environment variables, signal handlers, torch's thread count and random generators,
logging handlers, warning filters and the W&B run are as before it, so two calls in one kernel are two independent runs.
"""
import contextlib
import json
import logging
import os
import random
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import ArgsType

from callbacks import KaggleSubmissionWriter, LearningCurvePlot, SubmissionError
from datamodules.console import in_notebook
from datamodules.errors import DataError
from homework import runs
from homework.cli import startup
from homework.cli.main import HomeworkCLI, execute, run
from homework.command_line import FROM_PYTHON
from homework.lab.advisor import Diagnosed

#: `hw1.fit(max_epochs=3)`: the keyword arguments that stand for a longer option name
SHORTCUTS = {"max_epochs": "trainer.max_epochs", "max_steps": "trainer.max_steps", "data_dir": "data.data_dir"}
#: options that are a bare flag on the command line: `resume=True` is `--resume` (the newest run)
BARE = ("resume", "print_config", "help")
COMMANDS = ("fit", "validate", "test", "predict", "critical", "compare", "diagnose")
#: commands added since: each homework module gets them without changing its `fit, ... = HOMEWORK.commands()` line
LATER_COMMANDS = ("tune",)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (a notebook's interrupt) stopped the command after it said what it kept: IPython shows this one line,
    not a traceback through the project's code."""

    def __init__(self) -> None:
        super().__init__("the command was interrupted; what it kept is printed above")
        self.__suppress_context__ = True

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]


class HomeworkError(Exception):
    """A user mistake in a call of the Python API: the message is the command line's one-line error.

    IPython shows just `HomeworkError: <message>`, without the traceback (the mistake is in the call, not in the
    project's code), and the exception carries no chained context."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.__suppress_context__ = True

    def _render_traceback_(self) -> list[str]:  # IPython's hook for an exception's own rendering
        return [f"{type(self).__name__}: {self}"]


@dataclass
class Result:
    """What a command made. Every field is None (or empty) where the command has none.

    command: the command that ran (`fit`, `predict`, ...)
    run_dir: fit: the new run; evaluating: the run of the checkpoint used; compare, k-fold: the folder of their runs
    monitor, best_score: the model's main metric and its best value (fit; evaluating: as the run recorded it)
    best_checkpoint: fit: the best checkpoint; evaluating: the checkpoint used
    submission: predict: the file written (the Kaggle submission)
    scores: validate/test: the scores; fit: the last epoch's metrics; k-fold: each fold's score, their mean and std
    diagnosis: fit and diagnose: the advisor's diagnosis, as printed
    runs: compare and k-fold: one Result per fit
    cli: the HomeworkCLI that ran (its trainer, model and datamodule), for a closer look
    study: tune: the Optuna study (its best trial's run is `run_dir`)
    """

    command: str
    run_dir: Path | None = None
    monitor: str | None = None
    best_score: float | None = None
    best_checkpoint: Path | None = None
    submission: Path | None = None
    scores: dict[str, float] = field(default_factory=dict)
    diagnosis: str | None = None
    runs: list["Result"] = field(default_factory=list)
    cli: Any = field(default=None, repr=False)
    study: Any = field(default=None, repr=False)  # tune: the Optuna study

    @property
    def learning_curve(self) -> Path | None:
        """The fit's learning_curve.png, when it drew one (where it went: beside a picture of the user's there)."""
        curve = next((c for c in getattr(getattr(self.cli, "trainer", None), "callbacks", [])
                      if isinstance(c, LearningCurvePlot)), None)
        path = curve.written if curve is not None and curve.written else \
            self.run_dir / "learning_curve.png" if self.run_dir else None
        return path if path is not None and path.is_file() else None

    def show(self) -> None:
        """Show the learning curve (or, for compare, the comparison figure) in the notebook."""
        from IPython.display import Image, display

        figures = [self.learning_curve] if self.learning_curve else sorted(self.run_dir.glob("*.png"))
        for figure in figures:
            display(Image(filename=str(figure)))

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython: a notebook shows `result` as its summary
        printer.text(str(self))

    def __str__(self) -> str:
        names = ("run_dir", "monitor", "best_score", "best_checkpoint", "submission", "scores")
        shown = [f"  {name}: {getattr(self, name)}" for name in names if getattr(self, name) not in (None, {})]
        if self.runs:
            shown.append(f"  runs: {len(self.runs)} (" + ", ".join(str(r.run_dir.name) for r in self.runs) + ")")
        return f"Result of {self.command}:\n" + "\n".join(shown)


# --- options -> the command line ---------------------------------------------------------------------------
def render(value: Any) -> str:
    """An option's value as the command line writes it."""
    if isinstance(value, Result):
        if value.run_dir is None:
            raise HomeworkError(f"the Result of {value.command} names no run to use")
        return str(value.run_dir)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return json.dumps([render(v) if isinstance(v, (Path, Result)) else v for v in value])
    return str(value)


def flags(options: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`{"trainer": {"max_epochs": 3}, "model.optimizer.lr": 0.1}` ->
    `--trainer.max_epochs 3 --model.optimizer.lr 0.1`."""
    args = []
    for key, value in options.items():
        if not isinstance(key, str) or not key:
            raise HomeworkError(f"option names are strings such as 'trainer.max_epochs', not {key!r}")
        name = key.removeprefix("--").replace("__", ".")
        if not prefix:
            name = SHORTCUTS.get(name, name)
        if isinstance(value, Mapping) and value:
            args += flags(value, f"{prefix}{name}.")
        elif not prefix and name in BARE and isinstance(value, bool):
            args += [f"--{name}"] if value else []  # `fit --resume`, not `--resume true` (a run named "true")
        else:
            args += [f"--{prefix}{name}", render(value)]
    return args


def command_line(command: str, given: tuple, options: Mapping[str, Any]) -> list[str]:
    """The words of the command line that `command(*given, **options)` stands for."""
    args = [command]
    for item in given:
        if isinstance(item, str):
            args += shlex.split(item)
        elif isinstance(item, Path):
            args.append(str(item))
        elif isinstance(item, (list, tuple)):
            args += [render(a) if isinstance(a, (Path, Result, bool)) else str(a) for a in item]
        elif isinstance(item, Mapping):
            args += flags(item)
        else:
            raise HomeworkError(f"{command}: give options as keyword arguments, a dict or command-line text, "
                                f"not {type(item).__name__}")
    return args + flags(options)


# --- one call, no state left behind --------------------------------------------------------------------------
def _loggers() -> dict[str, logging.Logger]:
    found = {"": logging.getLogger()}
    found.update({name: log for name, log in logging.root.manager.loggerDict.items()
                  if isinstance(log, logging.Logger)})
    return found


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Run a command as if in its own process: what it changes in this one is put back afterwards."""
    environ = dict(os.environ)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
           torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    logs = {name: (list(log.handlers), list(log.filters), log.level, log.propagate) for name, log in _loggers().items()}
    running = set(threading.enumerate())
    users_run = getattr(sys.modules.get("wandb"), "run", None)  # a W&B run of the user's own is left alone
    service = "WANDB_SERVICE" in os.environ  # a W&B service an earlier run started (its address): left running
    try:
        with warnings.catch_warnings():
            yield
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and users_run is None:  # W&B's run and service started for this call end with it
            if getattr(wandb, "run", None) is not None:
                wandb.finish()  # (normally closed by the run itself; this is for a failure that could not)
            if not service:  # (ending one an earlier run started would leave its address to a dead socket)
                wandb.teardown()  # the service process and its threads (the next run starts its own)
        sys.stdout.flush()
        sys.stderr.flush()
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update({k: v for k, v in environ.items() if os.environ.get(k) != v})
        for sig, handler in handlers.items():
            if signal.getsignal(sig) is not handler and handler is not None:
                signal.signal(sig, handler)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if rng[3] is not None:
            torch.cuda.set_rng_state_all(rng[3])
        for name, log in _loggers().items():
            before = logs.get(name, ([], [], logging.NOTSET, True))
            for handler in [h for h in log.handlers if h not in before[0]]:
                log.removeHandler(handler)
                handler.close()
            log.handlers[:], log.filters[:] = before[0], before[1]
            log.setLevel(before[2])
            log.propagate = before[3]
        _join_new_threads(running)


@contextlib.contextmanager
def information_on_stdout() -> Iterator[None]:
    """In a notebook, what a command prints as information (the banner, Lightning's and the checkpoints' lines,
    warnings) goes to stdout: Jupyter and Colab draw stderr red, as if each line were an error. Errors are raised
    (HomeworkError) and shown as errors. Elsewhere nothing changes."""
    if not in_notebook():
        yield
        return
    err = sys.stderr
    moved = [h for log in _loggers().values() for h in log.handlers
             if type(h) is logging.StreamHandler and h.stream is err]
    for handler in moved:
        handler.setStream(sys.stdout)
    try:
        with contextlib.redirect_stderr(sys.stdout):
            yield
    finally:
        for handler in moved:
            handler.setStream(err)


def _join_new_threads(running: set[threading.Thread], timeout: float = 10.0, daemons: float = 1.0) -> None:
    """Wait (a little) for the threads the command started to end: data loaders' and W&B's finish shortly after
    their run. None is stopped by force; a thread still running after `timeout` (a daemon thread: `daemons`
    seconds, such as the telemetry exporter W&B keeps for the whole process and ends at exit) is left to its
    owner."""
    started = time.monotonic()
    for thread in sorted(set(threading.enumerate()) - running, key=lambda t: t.daemon):
        if thread is not threading.current_thread():
            limit = daemons if thread.daemon else timeout
            thread.join(max(0.0, started + limit - time.monotonic()))


# --- the commands ------------------------------------------------------------------------------------------------
class Homework:
    """One homework's commands, from what makes it: its task, its data, its recipe and the linked options."""

    def __init__(self, model_class: type, datamodule_class: type, config_file: str,
                 links: dict[str, str] | None = None) -> None:
        self.model_class, self.datamodule_class = model_class, datamodule_class
        self.config_file, self.links = config_file, links
        self.name = datamodule_class.homework
        startup.loaded()  # the entry point's imports are done

    def main(self, args: ArgsType = None) -> HomeworkCLI:
        """The command line: `python homework/hwN.py ARGS` (a mistake: one line on stderr and exit code 2)."""
        return run(self.model_class, self.datamodule_class, self.config_file, args, self.links)

    def call(self, command: str, given: tuple, options: dict[str, Any]) -> Result | None:
        """`command(*given, **options)` from Python; None after `--help` or `--print_config` (printed)."""
        show = options.pop("show_curve", None)
        args = command_line(command, given, options)
        from_python = FROM_PYTHON.set(True)  # the next commands it prints are this API's calls
        try:
            with isolated(), information_on_stdout():
                outcome = execute(self.model_class, self.datamodule_class, self.config_file, args, self.links)
        except (DataError, SubmissionError) as err:
            raise HomeworkError(str(err)) from None
        except SystemExit as exit:
            if exit.code in (0, None):  # --help, --print_config: printed, nothing ran
                return None
            if exit.code == 130:  # Ctrl-C: the run said what it kept
                raise Interrupted() from None
            raise
        finally:
            FROM_PYTHON.reset(from_python)
        result = self.result(command, outcome)
        if command == "fit" and result.learning_curve and (in_notebook() if show is None else show):
            result.show()
        return result

    def result(self, command: str, outcome: Any) -> Result:
        if hasattr(outcome, "trials") and hasattr(outcome, "study_name"):  # tune: an Optuna study
            done = [t for t in outcome.trials if t.value is not None]
            best = outcome.best_trial if done else None
            run_dir = Path(best.user_attrs["run_dir"]) if best and best.user_attrs.get("run_dir") else None
            return Result(command, run_dir, self.model_class.monitor, best.value if best else None,
                          self.best_checkpoint(run_dir) if run_dir else None, study=outcome)
        if isinstance(outcome, Diagnosed):
            record = runs.read_record(outcome.run_dir) or {}
            return Result(command, outcome.run_dir, record.get("monitor"), record.get("best_score"),
                          self.best_checkpoint(outcome.run_dir), diagnosis=outcome.text)
        if isinstance(outcome, list):  # several runs: compare's variants or k-fold's folds
            if outcome and hasattr(outcome[0], "variant"):
                parts = [Result("fit", r.run_dir, r.monitor, r.best_score if r.best_score == r.best_score else None,
                                self.best_checkpoint(r.run_dir), scores={"seconds": r.seconds}) for r in outcome]
                best = [r for r in outcome if r.best_score == r.best_score]
                pick = (min if outcome[0].mode == "min" else max)(best, key=lambda r: r.best_score) if best else None
                top = next((p for p in parts if pick and p.run_dir == pick.run_dir), None)
                return Result(command, outcome[0].run_dir.parent, outcome[0].monitor, top and top.best_score,
                              top and top.best_checkpoint, runs=parts)
            parts = [self.result("fit", cli) for cli in outcome]
            scores = [p.best_score for p in parts if p.best_score is not None]
            summary = {f"fold{i}": p.best_score for i, p in enumerate(parts) if p.best_score is not None}
            if len(scores) >= 2:
                summary.update(mean=float(np.mean(scores)), std=float(np.std(scores, ddof=1)))
            return Result(command, parts[0].run_dir.parent if parts else None, parts[0].monitor if parts else None,
                          summary.get("mean"), scores=summary, runs=parts)
        cli = outcome
        trainer = cli.trainer
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if command == "fit":
            ckpt = trainer.checkpoint_callback
            score = ckpt.best_model_score if ckpt is not None else None
            best = self.best_checkpoint(cli.run_dir) if cli.run_dir else None  # (as run.json names it)
            if best is None and ckpt is not None and ckpt.best_model_path:
                best = Path(ckpt.best_model_path)
            return Result(command, cli.run_dir, cli.model.monitor,
                          float(score) if score is not None and torch.isfinite(score) else None, best,
                          scores=metrics, diagnosis=cli.advice, cli=cli)
        checkpoint = Path(cli.config[cli.subcommand].ckpt_path)
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
        record = runs.read_record(run_dir) or {}
        writer = next((c for c in trainer.callbacks if isinstance(c, KaggleSubmissionWriter)), None)
        return Result(command, run_dir if record else None, record.get("monitor", cli.model.monitor),
                      record.get("best_score"), checkpoint, writer.written_path if writer else None,
                      scores=metrics if command in ("validate", "test") else {}, cli=cli)

    @staticmethod
    def best_checkpoint(run_dir: Path) -> Path | None:
        record = runs.read_record(run_dir) or {}
        return run_dir / record["best_checkpoint"] if record.get("best_checkpoint") else None

    def commands(self) -> tuple[Callable[..., Result | None], ...]:
        """The module-level functions of `homework/hwN.py`, one per command, in the order of COMMANDS. Those of
        LATER_COMMANDS (`tune`) are set on the homework's module here, so every `hwN.py` has them too."""
        module = sys.modules.get(f"homework.{self.name}")
        for name in LATER_COMMANDS if module is not None else ():
            setattr(module, name, self._function(name))
        return tuple(self._function(name) for name in COMMANDS)

    def _function(self, name: str) -> Callable[..., Result | None]:
        def function(*options, **keywords) -> Result | None:
            return self.call(name, options, keywords)

        function.__name__ = function.__qualname__ = name
        function.__module__ = f"homework.{self.name}"
        function.__doc__ = (
            f"`python homework/{self.name}.py {name} ...` from Python; returns a Result (homework/cli/api.py).\n\n"
            f"Options as on the command line: keyword arguments (trainer={{'max_epochs': 3}}, trainer__max_epochs=3, "
            f"max_epochs=3), dicts with dotted names, or command-line text. "
            f"{'show_curve: show learning_curve.png at the end (default: in a notebook). ' if name == 'fit' else ''}"
            f"A mistake raises HomeworkError. Every option: python homework/{self.name}.py {name} --help")
        return function
