"""The table of commands (homework/cli/commands.py) is the one truth: the command is the first word on the line,
every list of commands the CLI prints names all of them, and each command's --help describes that command."""
import re

import pytest

from datamodules.errors import DataError
from homework.cli import commands
from homework.hw1 import main
from tests.conftest import user_error

EVERY = ["fit", "validate", "test", "predict", "critical", "diagnose", "compare", "tune"]


def test_the_table_names_every_command():
    assert commands.names() == EVERY


@pytest.mark.parametrize("args, word", [
    (["fit", "--trainer.logger.init_args.name", "tune"], "fit"),
    (["fit", "--data.data_dir", "compare"], "fit"),
    (["-c", "tune", "fit"], "fit"),  # (a config file that happens to be called `tune`)
    (["--config", "mine.yaml", "tune", "--n_trials", "3"], "tune"),
    (["--print_config", "predict"], "predict"),
    (["--trainer.max_epochs=3"], None),
])
def test_the_command_is_the_first_word_not_an_options_value(args, word):
    assert commands.command_word(args) == word


def test_a_value_that_is_a_commands_name_is_just_a_value():
    """`fit --trainer.logger.init_args.name tune` once ran `tune` ("drop `fit`"); it is a fit."""
    for args in (["fit", "--trainer.logger.init_args.name", "tune"], ["fit", "--data.data_dir", "compare"],
                 ["validate", "--trainer.logger.init_args.name", "diagnose"]):
        assert commands.dispatch(args, lambda a: ("LightningCLI", a), None, None) == ("LightningCLI", args)


def test_no_command_or_a_mistyped_one_names_every_command(capsys):
    listed = ", ".join(EVERY)
    assert user_error(capsys, main, []) == f"error: no command given: one of {listed} (--help says what each does)"
    assert user_error(capsys, main, ["fitt", "--trainer.max_epochs", "1"]) == (
        f"error: 'fitt' is not a command; did you mean fit? The commands: {listed} (--help says what each does)")
    assert user_error(capsys, main, ["xyzzy"]) == (
        f"error: 'xyzzy' is not a command. The commands: {listed} (--help says what each does)")
    with pytest.raises(DataError, match="'tunee' is not a command; did you mean tune?"):
        commands.check_command(["--config", "x.yaml", "tunee"])


def help_of(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_the_root_help_lists_every_command_once_from_the_table(capsys):
    text = help_of(capsys)
    # (the program's name before it is pytest's, or "-c" in an xdist worker)
    assert text.splitlines()[0].endswith(f" [-h] [-c CONFIG] {{{','.join(EVERY)}}} [options]")
    for name in EVERY:
        assert f"\n  {name:<19}  {commands.summary(name)}" in text
    assert not re.search(r"^    (fit|validate|test|predict|critical) ", text, re.MULTILINE)  # (argparse's list)
    assert "Runs the full optimization routine" not in text and "one of the commands listed at the top" in text


@pytest.mark.parametrize("command", ["predict", "critical"])
def test_each_subcommands_help_describes_that_subcommand(capsys, command):
    text = help_of(capsys, command)
    lines = text.splitlines()
    assert lines[lines.index(commands.summary(command)) - 1] == ""  # its description, under the usage
    assert f"\n{command}: {commands.summary(command)}:\n" in text  # its own options' group
    assert "Runs the full optimization routine" not in text and "Useful to:" not in text


def test_fit_help_states_the_recipes_defaults_only(capsys):
    """Lightning's "defaults to ``max_epochs = 1000``" beside the recipe's "(default: 600)" contradicted itself."""
    text = " ".join(help_of(capsys, "fit").split())
    assert "--trainer.max_epochs MAX_EPOCHS Stop training once this number of epochs is reached. To enable infinite " \
           "training, set ``max_epochs = -1``. (type: Optional[int], default: 600)" in text
    assert "1000" not in text and "Default: ``" not in text and "Disabled by default" not in text
    # only sentences stating a default go: these say something else, and stay
    assert "If there is a non-default number of validation runs per training epoch" in text
    assert "Whether to enable to progress bar by default." in text
    assert "- best: the best model checkpoint from the previous ``trainer.fit`` call will be loaded" in text


def test_k_fold_reads_the_command_as_the_first_word_not_a_value():
    """`--data.fold all` with a value that happens to read `fit` is not a fit of every fold."""
    from datamodules.errors import DataError
    from homework.runs import kfold

    with pytest.raises(DataError, match="goes with `fit`"):
        kfold.fit_all_folds(lambda args: None, ["validate", "--trainer.logger.init_args.name", "fit",
                                                "--data.fold", "all"], None)
