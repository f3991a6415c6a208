"""Every private API of another library this project uses, in one place, each checked against the version named
beside it and by a test in tests/test_adapters.py that fails if its behaviour changes. Nothing else in the
project touches another library's `_private` names: an upgrade that breaks one breaks it here.

    jsonargparse 4.53.0, pytorch-lightning 2.6.6, wandb 0.31.0, numpy 2.4.6

It imports nothing of the project, so every layer may use it (tests/test_layers.py).
"""
import argparse
import signal
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher, _SubprocessScriptLauncher


# --- jsonargparse / argparse ---------------------------------------------------------------------------
def subcommand_parser(parser: Any, name: str | None) -> Any | None:
    """The parser of subcommand `name` of a LightningCLI parser, None when there is none (to name the closest
    option of *that* command in an error). jsonargparse 4.53.0: `parser._subcommands_action._name_parser_map`;
    there is no public getter."""
    action = getattr(parser, "_subcommands_action", None)
    return action._name_parser_map.get(name) if action is not None and name else None


def hide_subcommand_list(parser: Any, says: str) -> None:
    """Leave argparse's list of subcommands out of a parser's `--help` (the description lists every command,
    those LightningCLI does not parse too), its line saying `says` instead. argparse's `_choices_actions`
    (what help lists; unchanged since Python 3.2) of jsonargparse 4.53.0's `parser._subcommands_action`. (Its
    `help = SUPPRESS` would also hide the subcommands from jsonargparse's config dump.)"""
    action = getattr(parser, "_subcommands_action", None)
    if action is not None:
        action._choices_actions.clear()
        action.help = says


def help_parts(parser: Any) -> list[tuple[str | None, Any, Any]]:
    """(subcommand or None, its parser, each of its argument groups and actions) for a parser and its subcommands'
    parsers, to reword their help (`title`, `help`). argparse's `_action_groups` and `_actions` (unchanged since
    Python 3.2) and jsonargparse 4.53.0's `_subcommands_action._name_parser_map`."""
    parts = [(None, parser, item) for item in (*parser._action_groups, *parser._actions)]
    action = getattr(parser, "_subcommands_action", None)
    for name, sub in (action._name_parser_map.items() if action is not None else ()):
        parts += [(name, sub, item) for item in (*sub._action_groups, *sub._actions)]
    return parts


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every `--option` a parser accepts (for "did you mean"). argparse's `_actions`, unchanged since Python 3.2
    and what jsonargparse 4.53.0 builds on."""
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def command_parser(cli: Any, name: str) -> Any:
    """The parser LightningCLI built for subcommand `name` (to print its config as `--print_config` would).
    pytorch-lightning 2.6.6: `LightningCLI._parser(subcommand)`."""
    return cli._parser(name)


# --- Lightning's WandbLogger ------------------------------------------------------------------------------
def wandb_init_arguments(logger: Any) -> dict:
    """The keyword arguments Lightning's WandbLogger will pass to `wandb.init` (a dict we may edit before the run
    starts: there is no public way to drop `anonymous` or add settings). pytorch-lightning 2.6.6: `_wandb_init`."""
    return logger._wandb_init


def started_wandb_run(logger: Any) -> Any | None:
    """The W&B run a WandbLogger has started, None before it starts (the public `experiment` would start one).
    pytorch-lightning 2.6.6: `_experiment`."""
    return logger._experiment


# --- Lightning's DDP launcher (callbacks/interrupt.py: Ctrl-C stops every process) --------------------------
# pytorch-lightning 2.6.6: `_SubprocessScriptLauncher`, its `_call_children_scripts` and `procs` (the list its
# process observer watches) are private; there is no public way to start the children with SIGINT ignored.
def launched_processes_ignore_ctrl_c(trainer: pl.Trainer) -> None:
    """The processes Lightning's DDP launcher starts for the other devices ignore Ctrl-C from their very first
    instruction, the import of torch included: an ignored signal stays ignored across exec (and Python then
    installs no KeyboardInterrupt handler), so SIGINT is ignored here just while the launcher starts them.
    (torchrun and SLURM start the processes themselves: nothing to do.)"""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher) or not hasattr(launcher, "_call_children_scripts"):
        return
    start = launcher._call_children_scripts

    def start_ignoring_ctrl_c() -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            start()
        finally:
            signal.signal(signal.SIGINT, previous)

    launcher._call_children_scripts = start_ignoring_ctrl_c


def interactive() -> bool:
    """Lightning takes this process for an interactive one (a notebook's kernel, `python -i`), where it starts several
    devices only as forked processes and refuses `ddp`. pytorch-lightning 2.6.6: the module constant `_IS_INTERACTIVE`
    its accelerator connector reads (set at import from `sys.ps1` and `sys.flags.interactive`)."""
    from pytorch_lightning.trainer.connectors import accelerator_connector

    return bool(accelerator_connector._IS_INTERACTIVE)


def spawns_processes(trainer: pl.Trainer) -> bool:
    """The strategy starts its processes with multiprocessing (ddp_spawn, ddp_fork, ddp_notebook), which hands back
    only the weights. pytorch-lightning 2.6.6: `_MultiProcessingLauncher` is the launcher of all three."""
    return isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)


def stop_launched_processes(trainer: pl.Trainer) -> None:
    """End the processes Lightning's launcher started for the other devices, and wait for them.

    They are taken off the launcher's list first: Lightning's process observer watches that list, and on
    seeing a process killed it SIGKILLs this one too, within 5 s."""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher) or not launcher.procs:
        return
    children = list(launcher.procs)
    launcher.procs.clear()
    for child in children:
        child.kill()  # (they ignore SIGINT; SIGKILL is what Lightning's own handler sends them)
    for child in children:
        child.wait()


# --- Lightning's learning-rate finder (homework/lab/finders.py: no redrawn bar in piped output) ----------------
@contextmanager
def lr_finder_without_progress_bar():
    """Lightning's range test draws its own tqdm bar, with no option to turn it off. pytorch-lightning 2.6.6:
    the module attribute `pytorch_lightning.tuner.lr_finder.tqdm`, swapped for a disabled one meanwhile."""
    from pytorch_lightning.tuner import lr_finder

    drawn = lr_finder.tqdm
    lr_finder.tqdm = partial(drawn, disable=True)
    try:
        yield
    finally:
        lr_finder.tqdm = drawn


# --- numpy (datamodules/packed.py: feature files saved as numpy arrays load without running code) -----------
def numpy_array_globals() -> list:
    """What unpickling a numpy array needs, to allowlist for `torch.load(weights_only=True)`: an array is data,
    no code runs. `_reconstruct` under both its names (numpy 1's `numpy.core`, numpy 2's `numpy._core`), as
    files saved with either carry it. numpy 1.x and 2.x: `_reconstruct` is private; there is no public name."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    dtypes = getattr(np, "dtypes", None)  # (numpy >= 1.25: a class per dtype)
    return [reconstruct, *((reconstruct, f"numpy.{name}.multiarray._reconstruct") for name in ("core", "_core")),
            np.ndarray, np.dtype,
            *(getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType"))]
