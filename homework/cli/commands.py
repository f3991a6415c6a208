"""Every command of `python homework/hwN.py`, in one table: the one way to add a command.

There are two kinds, and each command is one row of `COMMANDS`:

- **one model** (`fit`, `validate`, `test`, `predict`, `critical`): a method of `HomeworkTrainer`. LightningCLI
  makes it a subcommand whose options are the method's arguments (its docstring is `--help`), builds the model,
  the data and the trainer from the homework's recipe, resolves `--ckpt_path`, and calls it. To add one, write the
  method (as `homework/lab/critical.py: critical_command`) and list it here.
- **several runs, or none** (`compare`, `tune`, `diagnose`, `fit --data.fold all`): a function
  `start(args, make_cli, model_class, datamodule_class)`. Each fit it runs is a normal fit through `make_cli(args)` (its own run
  directory, checkpoints, learning curve and W&B run); every option it does not read itself goes to every fit.

A row's `asks(args)` says whether the command line asks for it; `dispatch` tries the rows in order, and
whatever none claims is LightningCLI's. Next commands are built from the run's saved config (`config.yaml`) or
its directory, never by editing the command line that was typed (homework/cli/output.py: `command`).
"""
import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonargparse import DefaultHelpFormatter

from homework.lab import advisor, compare, tune
from homework.lab.critical import critical_command
from homework.runs import kfold


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    kind: str  # "one model" (a HomeworkTrainer method) or "several runs" (a `start` function)
    method: Callable[..., Any] | None = None  # one model, beyond Lightning's four: the HomeworkTrainer method
    asks: Callable[[list[str]], bool] | None = None  # several runs: does this command line ask for it?
    start: Callable[..., Any] | None = None  # several runs: start(args, make_cli, model_class, datamodule_class)


def _named(name: str) -> Callable[[list[str]], bool]:
    return lambda args: name in args


COMMANDS = [
    Command("fit", "train, then the advisor's diagnosis (--find_lr, --find_batch_size, --plot_schedule: a finder "
                   "instead; --resume: continue a run)", "one model"),
    Command("validate", "score a checkpoint on the validation split", "one model"),
    Command("test", "score a checkpoint on labelled test data (HW5)", "one model"),
    Command("predict", "write the Kaggle file from a checkpoint, a run or a cross-validation's folds", "one model"),
    Command("critical", "local minimum or saddle point at the trained weights", "one model", critical_command),
    Command("diagnose", "the methodology advisor's diagnosis of a finished run, without training", "several runs",
            asks=_named("diagnose"), start=lambda args, make_cli, model, dm: advisor.diagnose_command(args, model, dm)),
    Command("compare", "the recipe under several optimizers, schedules or batch sizes", "several runs",
            asks=compare.asks_for_comparison, start=lambda args, make_cli, model, dm: compare.compare_command(
                args, make_cli, dm, model)),
    Command("tune", "hyperparameter search with Optuna over a space of options (--space, --n_trials; many "
                    "workers share a study through --storage)", "several runs",
            asks=_named("tune"), start=tune.tune_command),
    Command("fit --data.fold all", "every fold of a k-fold split, then their mean and spread", "several runs",
            asks=kfold.asks_for_all_folds, start=lambda args, make_cli, model, dm: kfold.fit_all_folds(make_cli, args, dm)),
]


def trainer_methods() -> dict[str, Callable[..., Any]]:
    """The HomeworkTrainer methods LightningCLI makes subcommands of, beyond Lightning's own four."""
    return {c.name: c.method for c in COMMANDS if c.method is not None}


def dispatch(args: list[str], make_cli, model_class, datamodule_class) -> Any:
    """Run the command `args` asks for: the first row of several runs that claims it, else LightningCLI's."""
    for command in COMMANDS:
        if command.kind == "several runs" and command.asks(args):
            return command.start(args, make_cli, model_class, datamodule_class)
    return make_cli(args)


def describe() -> str:
    """`python homework/hwN.py --help`: every command, with what it does."""
    width = max(len(c.name) for c in COMMANDS)
    return "Commands (each has its own --help):\n" + "\n".join(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS)


class KeepLines(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines (the table of commands) kept as written."""
