"""Every command of `python homework/hwN.py`, in one table: the one way to add a command.

There are two kinds, and each command is one row of `COMMANDS`:

- **one model** (`fit`, `validate`, `test`, `predict`, `critical`): a method of `HomeworkTrainer`. LightningCLI
  makes it a subcommand whose options are the method's arguments (its docstring is `--help`), builds the model,
  the data and the trainer from the homework's recipe, resolves `--ckpt_path`, and calls it. To add one, write the
  method (as `homework/lab/critical.py: critical_command`) and list it here.
- **several runs, or none** (`compare`, `tune`, `diagnose`, `fit --data.fold all`): a function
  `start(args, make_cli, model_class, datamodule_class)`. Each fit it runs is a normal fit through `make_cli(args)`
  (its own run directory, checkpoints, learning curve and W&B run); every option it does not read itself goes to
  every fit.

The command is the first word of the command line (after the root options `-c/--config FILE`, `--print_config`):
a value that happens to be a command's name is just a value. `dispatch` hands a command of several runs to its
`start` (a row's `asks(args)`, when it has one, decides instead of the word) and the rest to LightningCLI; no
command, or one that is not in the table, is one line naming them all. Next commands are built from the run's
saved config (`config.yaml`) or its directory, never by editing the command line that was typed
(homework/command_line.py: `command`).
"""
import argparse
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonargparse import DefaultHelpFormatter

from datamodules.errors import DataError
from homework.lab import advisor, compare, tune
from homework.lab.critical import critical_command
from homework.command_line import command_word
from homework.runs import kfold


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    kind: str  # "one model" (a HomeworkTrainer method) or "several runs" (a `start` function)
    method: Callable[..., Any] | None = None  # one model, beyond Lightning's four: the HomeworkTrainer method
    asks: Callable[[list[str]], bool] | None = None  # several runs: does the line ask for it (default: its word)
    start: Callable[..., Any] | None = None  # several runs: start(args, make_cli, model_class, datamodule_class)


COMMANDS = [
    Command("fit", "train, then the advisor's diagnosis (--find_lr, --find_batch_size, --plot_schedule: a finder "
                   "instead; --resume: continue a run)", "one model"),
    Command("validate", "score a checkpoint on the validation split", "one model"),
    Command("test", "score a checkpoint on labelled test data (HW5)", "one model"),
    Command("predict", "write the Kaggle file from a checkpoint, a run or a cross-validation's folds", "one model"),
    Command("critical", "local minimum or saddle point at the trained weights", "one model", critical_command),
    Command("diagnose", "the methodology advisor's diagnosis of a finished run, without training", "several runs",
            start=lambda args, make_cli, model, dm: advisor.diagnose_command(args, model, dm)),
    Command("compare", "the recipe under several optimizers, schedules or batch sizes", "several runs",
            start=lambda args, make_cli, model, dm: compare.compare_command(args, make_cli, dm, model)),
    Command("tune", "hyperparameter search with Optuna over a space of options (--space, --n_trials; many "
                    "workers share a study through --storage)", "several runs",
            start=tune.tune_command),
    Command("fit --data.fold all", "every fold of a k-fold split, then their mean and spread", "several runs",
            asks=kfold.asks_for_all_folds,
            start=lambda args, make_cli, model, dm: kfold.fit_all_folds(make_cli, args, dm)),
]


def trainer_methods() -> dict[str, Callable[..., Any]]:
    """The HomeworkTrainer methods LightningCLI makes subcommands of, beyond Lightning's own four."""
    return {c.name: c.method for c in COMMANDS if c.method is not None}


HELP = ("-h", "--help")


def names() -> list[str]:
    """Every command's name (the k-fold row is a way of `fit`), in the table's order."""
    return [c.name for c in COMMANDS if " " not in c.name]


def check_command(args: list[str]) -> str | None:
    """The command `args` names; DataError, naming every command, when it names none (or one not in the table).
    None: the root's own `--help`, which LightningCLI answers."""
    word = command_word(args)
    if word in names():
        return word
    listed = ", ".join(names())
    if word is None:
        if any(a in HELP for a in args):
            return None
        raise DataError(f"no command given: one of {listed} (--help says what each does)")
    close = difflib.get_close_matches(word, names(), n=1)
    raise DataError(f"'{word}' is not a command{f'; did you mean {close[0]}?' if close else '.'} The commands: "
                    f"{listed} (--help says what each does)")


def dispatch(args: list[str], make_cli, model_class, datamodule_class) -> Any:
    """Run the command `args` asks for: a command of several runs through its `start`, else LightningCLI's."""
    word = check_command(args)
    for command in COMMANDS:
        if command.kind == "several runs" and (command.asks(args) if command.asks else command.name == word):
            return command.start(args, make_cli, model_class, datamodule_class)
    return make_cli(args)


def summary(name: str) -> str:
    """What command `name` does, in one line (its `--help` begins with it)."""
    return next(c.summary for c in COMMANDS if c.name == name)


def usage() -> str:
    """The root parser's usage line, naming every command."""
    return f"%(prog)s [-h] [-c CONFIG] {{{','.join(names())}}} [options]"


def describe() -> str:
    """`python homework/hwN.py --help`: every command, with what it does."""
    width = max(len(c.name) for c in COMMANDS)
    return "Commands (each has its own --help):\n" + "\n".join(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS)


class KeepLines(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines (the table of commands) kept as written."""
