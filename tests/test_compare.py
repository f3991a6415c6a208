"""`compare`: several variants of HW1's recipe (demo data, 3 epochs) as normal runs in one comparison
directory, each with the flags its name means, then one figure and one table; mistakes are one line."""
import math
from pathlib import Path

import pytest
import yaml

from datamodules.errors import DataError
from datamodules.covid import CovidDataModule
from homework.lab import compare
from homework.cli.main import HomeworkCLI
from models.regression import CovidRegressor
from homework.hw1 import main as hw1
from tests.conftest import QUIET, user_error

LINKS = {"data.num_features": "model.in_features", "data.minibatches_per_step": "model.minibatches_per_step"}


def make_cli(args):
    return HomeworkCLI(CovidRegressor, CovidDataModule, "hw1.yaml", LINKS, args)


def run(*args: str):
    return compare.compare_command(["compare", "--trainer.max_epochs", "3", *QUIET, *args], make_cli, CovidDataModule)


def test_optimizers_run_as_runs_in_one_directory_with_a_figure_and_a_table(capsys):
    results = run("--optimizers", "sgd,adam")
    compare_dirs = list(Path("runs/hw1").glob("*_compare"))
    assert len(compare_dirs) == 1
    cdir = compare_dirs[0]
    assert [r.variant for r in results] == ["sgd", "adam"]
    for result, cls in zip(results, ("torch.optim.SGD", "torch.optim.Adam")):
        assert result.run_dir.parent == cdir and (result.run_dir / "checkpoints" / "last.ckpt").is_file()
        optimizer = yaml.safe_load((result.run_dir / "config.yaml").read_text())["model"]["optimizer"]
        assert optimizer["class_path"] == cls
        assert result.epochs == 3 and len(result.history["val_loss"]) == 3 and math.isfinite(result.best_score)
    sgd = yaml.safe_load((results[0].run_dir / "config.yaml").read_text())["model"]["optimizer"]["init_args"]
    assert sgd["lr"] == 0.01 and sgd["momentum"] == 0 and sgd["weight_decay"] == 0  # its own defaults, not AdamW's
    assert (cdir / "comparison.png").stat().st_size > 10_000
    table = (cdir / "comparison.md").read_text()
    out = capsys.readouterr().out
    for result in results:
        row = next(line for line in table.splitlines() if line.startswith(f"| {result.variant} "))
        assert f"{result.best_score:.4f}" in row and result.run_dir.name in row and f"| {result.epochs} " in row
        assert row in out
    assert "best val_mse" in table and "wall time (s)" in table and f"Comparison directory: {cdir}" in out

    # the comparison directory is not a cross-validation run: predict refuses to average its variants
    best = min(results, key=lambda r: r.best_score)
    line = user_error(capsys, hw1, ["predict", "--ckpt_path", str(cdir), *QUIET])
    assert line.startswith(f"error: --ckpt_path {cdir}: not a cross-validation directory") and \
        line.endswith(f"its best (val_mse {best.best_score:.4f}): --ckpt_path {best.run_dir}")
    assert not (cdir / "pred.csv").exists()


def test_a_diverging_variant_is_reported_and_the_others_still_run(capsys):
    results = run("--optimizers", "sgd_momentum,adam")  # lr 0.01 with momentum blows up on the demo set
    diverged, adam = results
    assert diverged.note.startswith("diverged") and not math.isfinite(diverged.best_score)
    assert math.isfinite(adam.best_score) and adam.epochs == 3
    captured = capsys.readouterr()
    assert "sgd_momentum: training stopped: the training loss (train_loss) became nan" in captured.err
    assert "Best: adam" in captured.out and "| sgd_momentum | -" in captured.out


def test_schedules_and_batch_sizes_set_their_flags_and_lr_applies_to_all():
    results = run("--schedules", "constant,step", "--lr", "0.002")
    configs = [yaml.safe_load((r.run_dir / "config.yaml").read_text())["model"] for r in results]
    assert configs[0]["lr_scheduler"] is None
    assert configs[1]["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"
    assert configs[1]["lr_scheduler"]["init_args"]["step_size"] == 1  # a third of the 3 epochs
    assert all(c["optimizer"]["init_args"]["lr"] == 0.002 for c in configs)
    assert compare.variant_flags("--batch_sizes", "64", None, 3) == ["--data.batch_size", "64"]
    flags = compare.variant_flags("--optimizers", "rmsprop", "0.05", 3)
    assert flags == ["--model.optimizer", "torch.optim.RMSprop", "--model.optimizer.lr", "0.05"]


def test_every_variant_trains_the_whole_budget_unless_early_stopping_is_asked_for():
    flags = []
    compare.compare_command(["compare", "--batch_sizes", "32,64", "--trainer.max_epochs", "2"],
                            lambda a: flags.append(a) or make_cli([*a, *QUIET]), CovidDataModule)
    assert all(a[a.index("--early_stopping.patience") + 1] == compare.NO_EARLY_STOP for a in flags)
    assert [a[a.index("--data.batch_size") + 1] for a in flags] == ["32", "64"]


@pytest.mark.parametrize("args, message", [
    (["--optimizers", "adam,lion"], "unknown variant 'lion'; choose from sgd,sgd_momentum"),
    (["--optimizers", "adam"], "name at least two different variants"),
    (["--batch_sizes", "16,big"], "'big' is not a batch size"),
    (["--optimizers", "adam,sgd", "--schedules", "step,constant"], "give exactly one of"),
    ([], "give exactly one of"),
    (["--schedules", "step,constant", "--lr", "-1"], "--lr -1: give a positive learning rate"),
])
def test_mistakes_are_one_line_before_anything_runs(args, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        compare.compare_command(["compare", *args], make_cli, CovidDataModule)
    assert not Path("runs").exists()


def test_help_says_what_each_variant_means(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.compare_command(["compare", "--help"], make_cli, CovidDataModule)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "sgd_momentum  torch.optim.SGD lr 0.01, momentum 0.9" in out and "python homework/hw1.py fit --help" in out
    assert not Path("runs").exists()


def test_every_panel_of_the_comparison_says_what_its_y_axis_is(monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    history = {"train_loss": [(e, 1 / (e + 1)) for e in range(5)], "val_loss": [(e, 1.2 / (e + 1)) for e in range(5)],
               "val_acc": [(e, 0.5 + 0.05 * e) for e in range(5)]}
    results = [compare.Result(name, Path(name), "val_acc", "max", 0.7, 4, 5, 1.0, history) for name in ("sgd", "adam")]
    compare.plot_comparison(results, Path("comparison.png"), "hw2: 2 optimizers")
    labels = [ax.get_ylabel() for ax in saved[0].axes]
    assert labels == ["loss", "loss", "val_acc"]


def test_a_variant_that_diverged_before_recording_takes_the_homeworks_metric_from_the_others(capsys):
    """The table and the "Best:" line name the homework's metric (HW1: val_mse), not a stand-in, when the first
    variant diverged before its first checkpoint (its directory is gone, so it recorded no metric)."""
    from callbacks.finite import NonFiniteLoss

    def diverge_first(args):
        if "torch.optim.SGD" in args:
            raise NonFiniteLoss("train_loss became nan at epoch 0")
        return make_cli(args)

    results = compare.compare_command(["compare", "--optimizers", "sgd,adam", "--trainer.max_epochs", "2", *QUIET],
                                      diverge_first, CovidDataModule)
    assert [(r.variant, r.monitor, r.mode) for r in results] == [("sgd", "val_mse", "min"), ("adam", "val_mse", "min")]
    out = capsys.readouterr().out
    assert "best val_mse" in out and "best val_loss" not in out
    assert "Best: adam (val_mse " in out
