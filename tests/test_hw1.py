"""HW1 end to end: CLI round trip, the three yearly layouts, feature selection, bad input, W&B, export."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from callbacks import LearningCurvePlot
from datamodules.errors import DataError
from datamodules.base import SAMPLE_SEED, split_indices
from datamodules.covid import LAYOUTS, ML2021, ML2022, ML2023, CovidDataModule, write_demo_covid
from homework.cli.hardware import auto_precision
from homework.hw1 import main
from tests.conftest import QUIET, shared_data, user_error

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--trainer.max_epochs", "2", *QUIET]


def fit(*args: str):
    return main(["fit", *FAST, *args])


def run_dirs(root: Path = Path("runs/hw1")) -> list[Path]:
    return sorted(p for p in root.glob("*") if p.is_dir())


def expect_user_error(capsys, args: list[str], *fragments: str) -> str:
    """The command must end in one `error:` line containing `fragments`, and write no run."""
    line = user_error(capsys, main, args)
    for fragment in fragments:
        assert fragment in line, line
    return line


# --- the whole workflow ---------------------------------------------------------------------------
def test_fit_validate_predict_round_trip_on_demo_data(caplog):
    cli = fit()
    assert "DEMO DATA" in caplog.text
    (run,) = run_dirs()
    assert run.name.endswith("_fit_demo")
    assert (run / "config.yaml").is_file() and (run / "learning_curve.png").is_file()
    ckpt = cli.trainer.checkpoint_callback
    assert Path(ckpt.best_model_path).parent == (run / "checkpoints").resolve()
    assert (run / "checkpoints/last.ckpt").is_file()
    assert ckpt.monitor == "val_mse"
    (curve,) = [c for c in cli.trainer.callbacks if isinstance(c, LearningCurvePlot)]
    assert float(ckpt.best_model_score) == pytest.approx(min(v for _, v in curve.history["val_mse"]))
    for name in ("train_loss", "val_loss", "val_mse", "val_rmse"):  # each epoch once, with its own values
        assert [e for e, _ in curve.history[name]] == [0, 1], name  # 0-based, as the checkpoint names
    assert curve.history["train_loss"][-1][1] == pytest.approx(cli.trainer.callback_metrics["train_loss"].item())

    validated = main(["validate", "--ckpt_path", "best", *QUIET])
    assert validated.trainer.callback_metrics["val_mse"].item() == pytest.approx(float(ckpt.best_model_score), rel=1e-5)

    predicted = main(["predict", "--ckpt_path", "best", *QUIET])
    pred = pd.read_csv(run / "pred.csv")
    assert list(pred.columns) == ["id", "tested_positive"]
    test_rows = len(pd.read_csv("data/hw1-demo/covid.test.csv"))
    assert len(pred) == test_rows and pred["id"].tolist() == list(range(test_rows))
    assert pred["tested_positive"].notna().all()
    # the predictions are the model's, on the test file, with the training-time scaling
    dm = predicted.datamodule
    x = dm.transform(dm.test_x, dm.layout.feature_names)
    with torch.no_grad():
        expected = predicted.model.eval()(x).numpy()
    np.testing.assert_allclose(pred["tested_positive"].to_numpy(), expected, rtol=1e-4, atol=1e-5)


def test_demo_beats_predicting_the_mean():
    """The demo set is learnable: a short default fit beats the constant (mean) predictor."""
    cli = fit("--trainer.max_epochs", "40", "--early_stopping.patience", "40")
    dm = cli.datamodule
    baseline = float(((dm.val_y - dm.train_y.mean()) ** 2).mean())
    assert float(cli.trainer.checkpoint_callback.best_model_score) < 0.2 * baseline


@pytest.mark.parametrize("module", [False, True], ids=["script", "module"])
def test_runs_as_a_script_and_as_a_module(module, tmp_path):
    entry = ["-m", "homework.hw1"] if module else [str(ROOT / "homework" / "hw1.py")]
    out = subprocess.run([sys.executable, *entry, "fit", "--print_config"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert config["early_stopping"]["monitor"] == config["checkpoint"]["monitor"] == "val_mse"


def test_sample_recipe_config_is_the_official_one():
    cli = main(["fit", "--config", str(ROOT / "homework/configs/hw1_sample.yaml"), "--trainer.fast_dev_run", "1",
                *QUIET])
    optimizer = cli.model.optimizers().optimizer
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 1e-5 and optimizer.defaults["momentum"] == 0.9
    assert cli.model.hparams.hidden_dims == [16, 8] and cli.datamodule.hparams.batch_size == 256
    assert cli.datamodule.num_features == len(ML2022.feature_names) == 116  # all but id and target
    assert cli.config.fit.early_stopping.patience == 400 and cli.config.fit.trainer.max_epochs == 3000


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", {"lr": "0.01"}), ("SGD", {"lr": "0.01", "momentum": "0.9"}), ("Adagrad", {}), ("RMSprop", {}),
    ("Adam", {}), ("AdamW", {"weight_decay": "0.05"}), ("RAdam", {}),
])
def test_every_optimizer_of_the_lectures_is_one_flag_away(name, kwargs):
    flags = [f for key, value in kwargs.items() for f in (f"--model.optimizer.{key}", value)]
    cli = fit("--trainer.fast_dev_run", "1", "--model.optimizer", f"torch.optim.{name}", *flags)
    optimizer = cli.model.optimizers().optimizer
    assert type(optimizer) is getattr(torch.optim, name)
    for key, value in kwargs.items():
        assert optimizer.defaults[key] == float(value)


@pytest.mark.parametrize("per_step", ["1", "epoch"])
def test_warmup_cosine_schedule_from_config_spans_the_trainers_steps(per_step):
    """Warmup + cosine over every optimizer step, whether Lightning or the model loops over minibatches."""
    cli = fit("--trainer.max_epochs", "3", "--model.lr_scheduler", "callbacks.WarmupCosineLR",
              "--model.lr_scheduler.warmup_steps", "0.3", "--model.lr_scheduler.min_lr_ratio", "0.1",
              "--data.minibatches_per_step", per_step)
    scheduler = cli.model.lr_schedulers()
    steps = cli.trainer.global_step  # optimizer steps, in both modes
    assert steps == 3 * math.ceil(len(cli.datamodule.train_x) / cli.datamodule.hparams.batch_size)
    assert scheduler.total_steps == steps and scheduler.last_epoch == steps
    assert cli.trainer.num_training_batches == (1 if per_step == "epoch" else steps // 3)
    lr = cli.config.fit.model.optimizer.init_args.lr
    factors = [scheduler.lr_factor(s) for s in range(steps)]
    peak = int(np.argmax(factors))
    assert factors[0] < 0.2 and abs(peak - 0.3 * steps) <= 1 and max(factors) == pytest.approx(1.0, abs=0.05)
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:]))  # decays after warmup
    assert cli.model.optimizers().param_groups[0]["lr"] == pytest.approx(0.1 * lr, rel=0.05)


def test_precision_is_chosen_for_the_hardware(monkeypatch):
    cli = fit("--trainer.fast_dev_run", "1")
    assert cli.config.fit.trainer.precision == "32-true"  # CPU
    assert cli.trainer.precision == "32-true"
    assert auto_precision() == "32-true"  # (each GPU's: tests/test_gpus.py)


def test_predict_uses_the_features_the_checkpoint_was_trained_with(capsys):
    fit("--data.features", "5")
    cli = main(["predict", "--ckpt_path", "best", *QUIET])
    assert cli.model.hparams.in_features == 5 and len(cli.datamodule.transform.names) == 5
    assert (run_dirs()[0] / "pred.csv").is_file()
    # asking for other features than the model was trained on is refused, not silently replaced
    line = user_error(capsys, main, ["predict", "--ckpt_path", "best", "--data.features", "all", *QUIET])
    assert "--data.features all" in line and "leave --data.features out" in line


# --- the yearly layouts --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.name)
def test_each_years_layout_is_read_by_its_header(layout, tmp_path):
    write_demo_covid(tmp_path / "d", layout, num_train=60, num_test=25)
    header = pd.read_csv(tmp_path / "d" / layout.train_file, nrows=0).columns
    assert len(header) == 1 + len(layout.states) + len(layout.signals) * layout.days
    dm = CovidDataModule(str(tmp_path / "d"))
    assert dm.layout is layout and not dm.is_demo
    assert dm.num_features == len(layout.states) + len(layout.signals) * layout.days - 1
    dm.setup("fit")
    dm.setup("predict")
    assert dm.train_x.shape == (48, dm.num_features) and dm.val_x.shape == (12, dm.num_features)
    assert dm.test_x.shape == (25, dm.num_features)


def test_layout_sizes_match_the_kaggle_files():
    assert (len(ML2021.states), len(ML2021.signals), ML2021.days) == (40, 18, 3)
    assert (len(ML2022.states), len(ML2022.signals), ML2022.days) == (37, 16, 5)
    assert (len(ML2023.states), len(ML2023.signals), ML2023.days) == (34, 18, 3)
    assert len(ML2023.header(train=True)) == 89 and len(ML2021.header(train=True)) == 95


def edit_csv(path: Path, edit) -> None:
    """Change a CSV's values with pandas, keeping its raw header (pandas renames repeated names)."""
    header = path.read_text().splitlines()[0].split(",")
    frame = pd.read_csv(path)
    edit(frame)
    frame.columns = header
    frame.to_csv(path, index=False)


def test_id_column_is_never_a_feature(tmp_path):
    write_demo_covid(tmp_path, ML2022, num_train=80, num_test=10)

    def distinctive_ids(frame):  # an id the features must not contain
        frame["id"] = 1000 + 7 * np.arange(len(frame))
    edit_csv(tmp_path / "covid.train.csv", distinctive_ids)
    dm = CovidDataModule(str(tmp_path))
    dm.setup("fit")
    features = torch.cat([dm.train_x, dm.val_x])
    assert not (features >= 1000).any()
    assert "id" not in dm.layout.feature_names
    with pytest.raises(DataError, match="id column is never a feature"):
        CovidDataModule(str(tmp_path), features=["id"])


def test_named_features_expand_signals_over_days(tmp_path):
    write_demo_covid(tmp_path, ML2022, num_train=40, num_test=10)
    dm = CovidDataModule(str(tmp_path), features=["tested_positive", "cli_day5", "TX"])
    assert dm.selected == ["TX", "tested_positive_day1", "tested_positive_day2", "tested_positive_day3",
                           "tested_positive_day4", "cli_day5"]  # file order; day 5 tested_positive is the target
    assert CovidDataModule(str(tmp_path), features="states").num_features == 37


def test_k_best_features_and_scaling_are_fitted_on_the_training_split_only(tmp_path):
    write_demo_covid(tmp_path, ML2022, num_train=400, num_test=10)
    _, val_idx = split_indices(400, 0.2, SAMPLE_SEED)

    def leak_on_validation_rows(frame):
        # 'shop' of day 1 := the target on the validation rows only: a selector fitted on all rows
        # would pick it, one fitted on the training split must not.
        frame.iloc[val_idx, frame.columns.get_loc("shop")] = frame.iloc[val_idx, -1].to_numpy() * 1000
    edit_csv(tmp_path / "covid.train.csv", leak_on_validation_rows)
    dm = CovidDataModule(str(tmp_path), features=3)
    dm.setup("fit")
    assert "shop_day1" not in dm.transform.names
    assert "tested_positive_day4" in dm.transform.names
    index = [dm.layout.feature_names.index(n) for n in dm.transform.names]
    torch.testing.assert_close(dm.transform.mean, dm.train_x[:, index].mean(0))
    all_rows = torch.cat([dm.train_x, dm.val_x])[:, index]
    assert not torch.allclose(dm.transform.mean, all_rows.mean(0))


def test_default_split_is_the_sample_codes_and_k_fold_partitions():
    n = 2699
    train, val = split_indices(n)
    expected = torch.utils.data.random_split(range(n), [n - 539, 539], generator=torch.Generator().manual_seed(5201314))
    assert train.tolist() == expected[0].indices and val.tolist() == expected[1].indices
    vals = [split_indices(n, num_folds=5, fold=i)[1] for i in range(5)]
    assert sorted(np.concatenate(vals).tolist()) == list(range(n))
    with pytest.raises(DataError, match="fold"):
        split_indices(n, num_folds=5, fold=5)


def test_k_fold_from_the_cli():
    cli = fit("--trainer.fast_dev_run", "1", "--data.num_folds", "4", "--data.fold", "3")
    dm = cli.datamodule
    assert len(dm.val_x) in (375, 376) and len(dm.train_x) + len(dm.val_x) == 1500


def test_real_ml2022_files_and_kaggle_export():
    data = shared_data("hw1", "ml2022")
    fit("--data.data_dir", str(data), "--trainer.max_epochs", "3")
    main(["predict", "--ckpt_path", "best", *QUIET])
    pred = pd.read_csv(run_dirs()[0] / "pred.csv")
    assert len(pred) == 1078 and pred["id"].tolist() == list(range(1078))


def test_real_ml2022_files_are_recognised():
    data = shared_data("hw1", "ml2022")
    dm = CovidDataModule(str(data))
    dm.setup("fit")
    dm.setup("predict")
    assert dm.layout is ML2022 and len(dm.train_x) + len(dm.val_x) == 2699 and len(dm.test_x) == 1078


# --- bad input ------------------------------------------------------------------------------------
def test_named_data_dir_without_files_is_an_error_not_a_demo(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    expect_user_error(capsys, ["fit", "--data.data_dir", str(tmp_path / "empty")],
                      "HW1 data not found", str(tmp_path / "empty"), "kaggle competitions download")
    assert not Path("data/hw1-demo").exists()


def test_half_a_dataset_is_an_error(capsys, tmp_path):
    write_demo_covid(tmp_path / "d", ML2022, 30, 10)
    (tmp_path / "d" / "covid.test.csv").unlink()
    expect_user_error(capsys, ["fit", "--data.data_dir", str(tmp_path / "d")],
                      "found covid.train.csv but not covid.test.csv")


def test_unknown_columns_are_named(capsys, tmp_path):
    write_demo_covid(tmp_path / "d", ML2022, 30, 10)
    path = tmp_path / "d" / "covid.train.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    header[header.index("wearing_mask") + 2 * 16] = "masks"  # day 3's wearing_mask
    path.write_text("\n".join([",".join(header), *lines[1:]]) + "\n")
    line = expect_user_error(capsys, ["fit", "--data.data_dir", str(tmp_path / "d")],
                             "covid.train.csv", "no known HW1 training layout", "closest ML2022")
    assert "missing ['wearing_mask']" in line and "unexpected ['masks']" in line


@pytest.mark.parametrize("file", ["covid.train.csv", "covid.test.csv"])
@pytest.mark.parametrize("value, problem", [("", "missing value (NaN)"), ("inf", "infinite value"),
                                            ("n/a?", "non-numeric value 'n/a?'")])
def test_bad_values_are_named_with_column_and_line_before_training(capsys, tmp_path, value, problem, file):
    """A bad test file fails `fit` before any training, naming the header's own column name and its day."""
    write_demo_covid(tmp_path / "d", ML2022, 30, 10)
    path = tmp_path / "d" / file
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[41] = value  # column 42 is day 1's 'nohh_cmnty_cli' (after id and 37 states)
    lines[5] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    line = expect_user_error(capsys, ["fit", "--data.data_dir", str(tmp_path / "d"), *FAST],
                             problem, "line 6", "column 'nohh_cmnty_cli' (column 42, day 1 of 5)", str(path))
    assert "_day1" not in line  # not a name of ours: the CSV header has no such column
    assert not Path("runs").exists() or not any(Path("runs").rglob("*"))  # nothing trained, nothing left


def test_empty_test_file_is_an_error(capsys, tmp_path):
    write_demo_covid(tmp_path / "d", ML2022, 30, 10)
    fit("--data.data_dir", str(tmp_path / "d"))
    header = (tmp_path / "d" / "covid.test.csv").read_text().splitlines()[0]
    (tmp_path / "d" / "covid.test.csv").write_text(header + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt_path", "best", "--data.data_dir", str(tmp_path / "d"), *QUIET])
    assert exit_info.value.code == 2
    assert "covid.test.csv: the file has a header but no data rows" in capsys.readouterr().err
    assert not list(Path("runs").glob("**/pred.csv"))


def test_blank_file_is_an_error(capsys, tmp_path):
    write_demo_covid(tmp_path / "d", ML2022, 30, 10)
    (tmp_path / "d" / "covid.test.csv").write_text("")
    expect_user_error(capsys, ["fit", "--data.data_dir", str(tmp_path / "d")], "covid.test.csv: the file is empty")


def test_best_checkpoint_without_any_run_is_an_error(capsys):
    expect_user_error(capsys, ["predict", "--ckpt_path", "best"], "no run under 'runs/hw1' has a checkpoint",
                      "train first")


# --- tracking -------------------------------------------------------------------------------------
def test_wandb_offline_records_the_full_config_per_run(monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    clis = [fit("--trainer.max_epochs", "1", "--data.batch_size", str(size)) for size in (64, 32)]
    out = capsys.readouterr().out
    first, second = run_dirs()
    assert f"W&B: logged offline; upload with `wandb sync {second.resolve()}/wandb/offline-run-*`" in out
    assert first != second
    for cli, run, batch_size in zip(clis, (first, second), (64, 32)):
        assert yaml.safe_load((run / "config.yaml").read_text())["data"]["batch_size"] == batch_size
        recorded = cli.trainer.logger.experiment.config  # the run's W&B config: the whole CLI config
        assert recorded["data"]["batch_size"] == batch_size
        assert recorded["early_stopping"]["monitor"] == "val_mse"
        assert recorded["model"]["optimizer"]["class_path"] == "torch.optim.AdamW"
        (wandb_run,) = (run / "wandb").glob("offline-run-*")
        assert list(wandb_run.glob("run-*.wandb"))
        attached = yaml.safe_load((wandb_run / "files" / "lightning_config.yaml").read_text())
        assert attached["data"]["batch_size"] == batch_size


def test_logger_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = fit("--trainer.max_epochs", "1", "--trainer.logger", "false")
    assert cli.trainer.logger is None
    assert not list(Path("runs").glob("**/wandb"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert fit("--trainer.max_epochs", "1").trainer.logger is None


def test_an_invalid_submission_is_refused_and_nothing_is_written(capsys, monkeypatch):
    fit()
    original = CovidDataModule.to_submission
    monkeypatch.setattr(CovidDataModule, "to_submission", lambda self, p: original(self, p).iloc[:-1])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt_path", "best", *QUIET])
    assert exit_info.value.code == 2
    assert "pred.csv not written: 499 rows, but the test set has 500" in capsys.readouterr().err
    assert not list(Path("runs").glob("**/pred.csv")) and not list(Path("runs").glob("**/.pred.csv*"))


def test_predict_takes_the_fitted_transform_from_the_checkpoint_not_the_training_file(tmp_path):
    write_demo_covid(tmp_path / "d", ML2022, num_train=100, num_test=20)
    fit("--data.data_dir", str(tmp_path / "d"))
    train = tmp_path / "d" / "covid.train.csv"
    train.write_text(train.read_text().splitlines()[0] + "\n")  # header only: reading it would fail
    cli = main(["predict", "--ckpt_path", "best", *QUIET])
    assert cli.datamodule.train_x is None and len(pd.read_csv(run_dirs()[0] / "pred.csv")) == 20


def test_predict_reads_the_data_dir_the_checkpoint_was_trained_on(tmp_path):
    write_demo_covid(tmp_path / "mine", ML2023, num_train=100, num_test=37)
    fit("--data.data_dir", str(tmp_path / "mine"))
    cli = main(["predict", "--ckpt_path", "best", *QUIET])
    assert cli.datamodule.layout is ML2023 and not cli.datamodule.is_demo
    assert len(pd.read_csv(run_dirs()[0] / "pred.csv")) == 37


@pytest.mark.parametrize("flags", [["--trainer.gradient_clip_val", "1.0"], ["--trainer.accumulate_grad_batches", "2"],
                                   ["--trainer.limit_train_batches", "0.5"]])
def test_what_needs_one_minibatch_per_step_says_so(capsys, flags):
    """The whole-epoch step (HW1's default) can't clip or accumulate: a clear error, not a Lightning traceback.
    (Several devices need no flag: test_distributed.py, with W&B offline as without a login. These fits are on one
    device and about the step rule, so W&B stays off as conftest sets it.)"""
    expect_user_error(capsys, ["fit", *FAST, *flags], "add --data.minibatches_per_step 1")
    cli = main(["fit", *FAST, *flags[:2], "--data.minibatches_per_step", "1", "--trainer.devices", "1"])
    assert cli.model.automatic_optimization and cli.trainer.global_step > 0  # then it trains, one minibatch a step


@pytest.mark.parametrize("lr", ["10", "1e6"])
def test_a_diverging_run_stops_at_once_and_says_what_to_try(capsys, lr):
    """A training loss that turns inf/NaN ends the fit (callbacks.StopOnNonFiniteLoss) rather than training on:
    one error line, exit 2, and the run, with any checkpoint saved before, kept and marked failed."""
    with pytest.raises(SystemExit) as exit_info:
        fit("--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", lr, "--model.optimizer.momentum", "0.9")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: training stopped: the training loss (train_loss) became ")
    assert "smaller learning rate (--model.optimizer.lr)" in err[-1]
    runs = run_dirs()
    if runs:  # an epoch finished before the blow-up: its checkpoint is kept, the run marked failed
        (run,) = runs
        assert json.loads((run / "run.json").read_text())["status"] == "failed"
        assert any((run / "checkpoints").glob("*.ckpt"))


def test_a_broken_checkpoint_file_is_a_clear_error(capsys, tmp_path):
    (tmp_path / "model.ckpt").write_text("not a checkpoint")
    expect_user_error(capsys, ["predict", "--ckpt_path", str(tmp_path / "model.ckpt")], "not a readable checkpoint")
