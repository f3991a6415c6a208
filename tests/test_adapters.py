"""The private APIs of other libraries (adapters/) still do what the project relies on: an upgrade
that changes one fails here, by name, instead of somewhere in a command."""
import pytest
from jsonargparse import ArgumentParser

import adapters


def test_a_subcommands_parser_is_found_by_name():
    parser, fit = ArgumentParser(exit_on_error=False), ArgumentParser(exit_on_error=False)
    fit.add_argument("--max_epochs", type=int)
    parser.add_subcommands().add_subcommand("fit", fit)
    assert adapters.subcommand_parser(parser, "fit") is fit
    assert adapters.subcommand_parser(parser, "nope") is None and adapters.subcommand_parser(parser, None) is None
    assert adapters.subcommand_parser(ArgumentParser(), "fit") is None  # no subcommands at all


def test_option_strings_lists_every_long_option():
    parser = ArgumentParser()
    parser.add_argument("--model.hidden_dims", type=list[int])
    parser.add_argument("-x", "--extra", type=int)
    assert {"--model.hidden_dims", "--extra"} <= set(adapters.option_strings(parser))
    assert "-x" not in adapters.option_strings(parser)


def test_lightning_cli_gives_each_subcommands_parser():
    from homework.hw1 import main

    cli = main(["fit", "--trainer.fast_dev_run", "1", "--trainer.enable_progress_bar", "false", "--diagnose", "false"])
    dumped = adapters.command_parser(cli, "fit").dump(cli.config["fit"], skip_none=False)
    assert "max_epochs:" in dumped and "hidden_dims:" in dumped


def test_the_wandb_loggers_init_arguments_are_editable_before_it_starts(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(project="p", save_dir=str(tmp_path), anonymous=True)
    init = adapters.wandb_init_arguments(logger)
    assert init["project"] == "p" and "anonymous" in init
    init.pop("anonymous")
    init["settings"] = {"silent": True}
    assert adapters.started_wandb_run(logger) is None  # not started by looking
    run = logger.experiment  # starts it, with the edited arguments
    try:
        assert adapters.started_wandb_run(logger) is run and run.settings.silent
    finally:
        import wandb

        wandb.finish()


def test_lightnings_ddp_launcher_still_starts_children_through_the_method_we_wrap():
    """callbacks/interrupt.py wraps `_call_children_scripts` and empties `procs` (tests/test_interrupt.py runs
    it for real under DDP); here only that both still exist, so a rename fails by name."""
    import inspect

    from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

    assert callable(getattr(_SubprocessScriptLauncher, "_call_children_scripts", None))
    assert "self.procs" in inspect.getsource(_SubprocessScriptLauncher)


@pytest.mark.parametrize("strategy, spawns", [("ddp_spawn", True), ("ddp_fork", True), ("ddp", False),
                                              ("auto", False)])
def test_the_strategies_that_start_processes_with_multiprocessing_are_told_apart(strategy, spawns):
    import pytorch_lightning as pl

    devices = 1 if strategy == "auto" else 2
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    assert adapters.spawns_processes(trainer) is spawns


def test_lightnings_lr_finder_draws_its_bar_through_a_module_attribute():
    from pytorch_lightning.tuner import lr_finder

    drawn = lr_finder.tqdm
    with adapters.lr_finder_without_progress_bar():
        assert lr_finder.tqdm is not drawn and lr_finder.tqdm(range(3)).disable
    assert lr_finder.tqdm is drawn


def test_a_saved_numpy_array_loads_with_weights_only_and_numpys_globals_allowed(tmp_path):
    """datamodules/packed.py reads feature files students saved with `torch.save(np_array)`."""
    import numpy as np
    import torch

    path = tmp_path / "features.pt"
    torch.save(np.arange(6, dtype=np.float32).reshape(2, 3), path)
    with pytest.raises(Exception):  # refused without the allowlist: the globals are what makes it load
        torch.load(path, weights_only=True)
    with torch.serialization.safe_globals(adapters.numpy_array_globals()):
        loaded = torch.load(path, weights_only=True)
    assert isinstance(loaded, np.ndarray) and loaded.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_lightning_reads_whether_it_runs_in_a_kernel_from_one_module_constant(monkeypatch):
    """Several CPU devices from a kernel are forked (ddp_fork) exactly when `adapters.interactive()` says so."""
    import pytorch_lightning as pl
    from pytorch_lightning.trainer.connectors import accelerator_connector

    for kernel in (False, True):
        monkeypatch.setattr(accelerator_connector, "_IS_INTERACTIVE", kernel)
        trainer = pl.Trainer(accelerator="cpu", devices=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False)
        assert adapters.interactive() is kernel and adapters.spawns_processes(trainer) is kernel


def test_the_subcommand_list_is_hidden_from_help_but_not_from_the_config_dump():
    parser, fit = ArgumentParser(exit_on_error=False), ArgumentParser(exit_on_error=False)
    fit.add_argument("--max_epochs", type=int, default=3)
    parser.add_subcommands().add_subcommand("fit", fit, help="Runs the full optimization routine.")
    adapters.hide_subcommand_list(parser, "one of the commands listed at the top")
    text = parser.format_help()
    assert "Runs the full optimization routine" not in text and "one of the commands listed at the top" in text
    assert parser.dump(parser.parse_args(["fit"])).split() == ["fit:", "max_epochs:", "3"]  # (as without hiding)


def test_help_parts_reach_the_subcommands_groups_and_actions():
    parser, fit = ArgumentParser(exit_on_error=False), ArgumentParser(exit_on_error=False)
    fit.add_argument_group("Runs the full optimization routine").add_argument("--ckpt_path", help="Default: ``None``.")
    parser.add_subcommands().add_subcommand("fit", fit)
    parts = adapters.help_parts(parser)
    assert any(c == "fit" and getattr(i, "title", None) == "Runs the full optimization routine" for c, _, i in parts)
    assert any(c == "fit" and getattr(i, "help", None) == "Default: ``None``." for c, _, i in parts)
