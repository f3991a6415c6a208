"""The shared CLI as a student meets it (driven through HW1, whose demo fit takes about a second):
no silent wrong results, help that tells the truth, readable output, one-line errors."""
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from callbacks import write_submission
from datamodules.covid import ML2022, CovidDataModule, write_demo_covid
from homework.hw1 import main
from tests.conftest import QUIET, user_error

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--trainer.max_epochs", "2", *QUIET]


def fit(*args: str):
    return main(["fit", *FAST, *args])


def run_dirs() -> list[Path]:
    return sorted(p for p in Path("runs/hw1").glob("*") if p.is_dir()) if Path("runs/hw1").is_dir() else []


# --- 1. predicting without a trained model ----------------------------------------------------------
@pytest.mark.parametrize("command", ["predict", "validate"])
def test_evaluating_without_a_checkpoint_is_an_error(capsys, command):
    line = user_error(capsys, main, [command, *QUIET])
    assert f"`{command}` needs a trained model" in line and "--ckpt_path best" in line
    assert not list(Path(".").rglob("*.csv")) or not list(Path("runs").rglob("pred.csv"))


# --- 2. `best` is the best comparable run, not the newest run's best epoch ------------------------
def test_best_means_the_best_comparable_run_and_says_which(capsys):
    good = fit("--trainer.max_epochs", "30")
    worse_newer = fit("--trainer.max_epochs", "1")
    good_score = float(good.trainer.checkpoint_callback.best_model_score)
    assert float(worse_newer.trainer.checkpoint_callback.best_model_score) > good_score
    # a run with another split scores on other samples: never compared, however good it looks
    fit("--trainer.max_epochs", "30", "--data.seed", "1")
    capsys.readouterr()

    predicted = main(["predict", "--ckpt_path", "best", "--data.seed", "5201314", *QUIET])
    chosen = Path(predicted.config.predict.ckpt_path)
    assert chosen == Path(good.trainer.checkpoint_callback.best_model_path).resolve()
    said = capsys.readouterr().err
    good_run = Path(good.trainer.default_root_dir).name
    assert "the best of 2 comparable run(s)" in said and good_run in said and f"{good_score:.4f}" in said
    record = json.loads((Path(good.trainer.default_root_dir) / "run.json").read_text())
    assert f"epoch={record['best_epoch']:03d}" in chosen.name  # one epoch convention everywhere (from 0)

    # without split flags: the runs comparable to the newest run (seed 1)
    newest = main(["validate", "--ckpt_path", "best", *QUIET])
    assert newest.datamodule.hparams.seed == 1
    # `last` stays the newest run's last checkpoint
    last = main(["validate", "--ckpt_path", "last", *QUIET])
    assert last.datamodule.hparams.seed == 1 and Path(last.config.validate.ckpt_path).name == "last.ckpt"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("Validation split: val_loss ")
    assert len(run_dirs()) == 3  # the three fits: evaluating leaves no run directory of its own


def test_best_with_no_comparable_run_says_what_to_pass(capsys):
    fit("--data.seed", "7")
    line = user_error(capsys, main, ["predict", "--ckpt_path", "best", "--data.seed", "8", *QUIET])
    assert "no run under 'runs/hw1' was trained" in line and "--data.seed 7" in line


# --- 3. resuming to train longer ----------------------------------------------------------------
def test_resuming_to_train_longer_respans_the_schedule(caplog):
    first = fit("--trainer.max_epochs", "3", "--data.minibatches_per_step", "1")
    scheduler = first.model.lr_schedulers()
    assert first.model.optimizers().param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine ended at 0
    weights = [p.detach().clone() for p in first.model.parameters()]
    steps = first.trainer.global_step

    longer = main(["fit", "--ckpt_path", "last", "--trainer.max_epochs", "6", "--data.minibatches_per_step", "1",
                   *QUIET])
    scheduler = longer.model.lr_schedulers()
    assert longer.trainer.global_step == 2 * steps and scheduler.total_steps == 2 * steps
    assert any(not torch.equal(a, b) for a, b in zip(weights, longer.model.parameters()))  # it learned
    assert f"the learning-rate schedule now spans {2 * steps} steps (it ended at {steps})" in caplog.text


# --- 4. a class named on the command line starts from its own defaults -------------------------------
def test_switching_optimizer_does_not_inherit_the_old_ones_arguments(capsys):
    cli = fit("--trainer.fast_dev_run", "1", "--model.optimizer", "torch.optim.SGD",
              "--model.optimizer.lr", "1e-3", "--model.optimizer.momentum", "0.9")
    defaults = cli.model.optimizers().optimizer.defaults
    assert defaults["weight_decay"] == 0 and defaults["momentum"] == 0.9 and defaults["lr"] == 1e-3  # not 0.01
    explicit = fit("--trainer.fast_dev_run", "1", "--model.optimizer", "torch.optim.SGD",
                   "--model.optimizer.weight_decay", "0.1")
    assert explicit.model.optimizers().optimizer.param_groups[0]["weight_decay"] == 0.1
    kept = fit("--trainer.fast_dev_run", "1", "--model.optimizer.lr", "0.01")  # same class: config kept
    assert kept.model.optimizers().optimizer.param_groups[0]["weight_decay"] == 0.01
    with pytest.raises(SystemExit):
        main(["fit", "--model.optimizer", "torch.optim.SGD", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["optimizer"]["init_args"]["weight_decay"] == 0


# --- 5. `test` where Kaggle keeps the labels ---------------------------------------------------------
def test_test_is_refused_where_the_test_set_has_no_labels(capsys):
    fit()
    line = user_error(capsys, main, ["test", "--ckpt_path", "best", *QUIET])
    assert "test set has no labels" in line and "`validate`" in line


# --- 7. help tells the truth ---------------------------------------------------------------------------
def test_help_shows_the_homeworks_real_defaults_with_descriptions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Samples per minibatch. (type: int, default: 128)" in text
    assert "'class_path': 'torch.optim.AdamW'" in text and "'weight_decay': 0.01" in text
    assert "default: epoch)" in text and "default: 600)" in text
    assert "Widths of the hidden layers" in text and "k best features by F-score" in text


# --- 8. a saved config re-runs as a new run ------------------------------------------------------------
def test_a_saved_config_reruns_as_a_new_run():
    first = fit()
    saved = Path(first.trainer.default_root_dir) / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    assert config["checkpoint"]["dirpath"] is None and config["trainer"]["precision"] is None
    before = sorted(p.name for p in saved.parent.rglob("*"))
    again = main(["fit", "--config", str(saved), *QUIET])
    assert Path(again.trainer.default_root_dir) != saved.parent
    assert sorted(p.name for p in saved.parent.rglob("*")) == before  # the old run is untouched
    assert len(run_dirs()) == 2


# --- 9. k-fold cross-validation ---------------------------------------------------------------------
def test_a_lone_fold_is_an_error(capsys):
    assert "--data.num_folds K" in user_error(capsys, main, ["fit", "--data.fold", "2", *FAST])
    assert "--data.fold 0..4" in user_error(capsys, main, ["fit", "--data.num_folds", "5", *FAST])
    assert not run_dirs()


def test_all_folds_report_mean_and_std_and_predict_averages_them(capsys):
    clis = main(["fit", "--data.num_folds", "3", "--data.fold", "all", *FAST])
    out = capsys.readouterr().out
    (cv_dir,) = run_dirs()
    folds = sorted(d for d in cv_dir.iterdir() if d.is_dir())
    assert [d.name.split("_fit_")[1] for d in folds] == ["fold0of3_demo", "fold1of3_demo", "fold2of3_demo"]
    summary = json.loads((cv_dir / "cv.json").read_text())
    scores = [float(c.trainer.checkpoint_callback.best_model_score) for c in clis]
    assert summary["scores"] == pytest.approx(scores)
    assert f"val_mse over 3 folds: {summary['mean']:.4f} ± {summary['std']:.4f}" in out
    assert f"predict --ckpt_path {cv_dir}" in out.strip().splitlines()[-1]

    main(["predict", "--ckpt_path", str(cv_dir), *QUIET])
    averaged = pd.read_csv(cv_dir / "pred.csv")["tested_positive"].to_numpy()
    singles = []
    for fold in folds:
        main(["predict", "--ckpt_path", str(next((fold / "checkpoints").glob("best-*.ckpt"))), *QUIET])
        singles.append(pd.read_csv(fold / "pred.csv")["tested_positive"].to_numpy())
    assert averaged == pytest.approx(sum(singles) / 3, rel=1e-5)
    assert not all(singles[0] == singles[1])  # the folds really are different models


# --- 10. output a student can read ----------------------------------------------------------------------
def command(*args: str, cwd: Path) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"} | {"WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, str(ROOT / "homework/hw1.py"), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env, timeout=300)
    return out.returncode, out.stdout.strip().splitlines()


def test_a_piped_fit_and_predict_print_a_line_per_epoch_and_end_with_the_result(tmp_path):
    code, lines = command("fit", "--trainer.max_epochs", "5", cwd=tmp_path)
    assert code == 0, lines[-10:]
    text = "\n".join(lines)
    for noise in ("litlogger", "wandb: WARNING", "_pytree", "log_every_n_steps", "\r", "wandb: Find logs"):
        assert noise not in text, noise
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == [f"{e}/4" for e in range(5)]
    assert lines[-3].startswith("Best val_mse = ") and lines[-2].startswith("Run directory: runs/hw1/")
    run_dir = lines[-2].removeprefix("Run directory: ")
    # the run just trained, with the script as it was started: a command that works where the user is
    assert lines[-1] == f"Next: python {ROOT / 'homework/hw1.py'} predict --ckpt_path {run_dir}"
    # homework/lab/advisor.py
    assert any(line.startswith("Diagnosis (practical methodology): ") for line in lines[-20:-3])
    assert len(lines) < 50

    code, lines = command(*shlex.split(lines[-1])[3:], cwd=tmp_path)
    assert code == 0 and "Couldn't infer the batch indices" not in "\n".join(lines)
    assert lines[-2].startswith("Wrote predictions ") and lines[-2].endswith("pred.csv (500 rows)")
    assert "demo data" in lines[-1]


# --- 11-13. errors are one line, and a failed run leaves nothing behind ----------------------------------
def test_a_misspelt_option_is_one_line_with_the_closest_valid_one(capsys):
    line = user_error(capsys, main, ["fit", "--model.hiden_dims", "[8]"])
    assert line == "error: unrecognized option --model.hiden_dims; did you mean --model.hidden_dims?"


def test_another_homeworks_checkpoint_is_one_line(capsys, tmp_path):
    ckpt = Path(fit().trainer.checkpoint_callback.best_model_path)
    assert torch.load(ckpt, weights_only=True)["homework"] == "hw1"
    foreign = torch.load(ckpt, weights_only=True)
    foreign["homework"] = "hw3"
    torch.save(foreign, tmp_path / "hw3.ckpt")
    line = user_error(capsys, main, ["predict", "--ckpt_path", str(tmp_path / "hw3.ckpt"), *QUIET])
    assert "this checkpoint was trained by hw3, not hw1" in line


@pytest.mark.parametrize("flags, message", [
    (["--model.optimizer.lr", "-0.001"], "--model.optimizer: Invalid learning rate: -0.001"),
    (["--model.dropout", "1.5"], "dropout probability has to be between 0 and 1"),
    (["--model.lr_scheduler.warmup_steps", "-3"], "--model.lr_scheduler: WarmupCosineLR needs warmup_steps >= 0"),
    (["--model.optimizer.lr", "abc"], "error: --model.optimizer.lr: 'abc' is not a valid float"),
    (["--trainer.max_epochs", "x"], "error: --trainer.max_epochs: 'x' is not a valid int or null"),
    (["--data.normalize", "maybe"], "error: --data.normalize: 'maybe' is not a valid bool"),
    (["--data.minibatches_per_step", "all"], "error: --data.minibatches_per_step: 'all' is not"),
    (["--model.optimizer", "torch.optim.Foo"], "--model.optimizer: no such class (module 'torch.optim' has no"),
])
def test_bad_values_given_to_classes_are_one_line(capsys, flags, message):
    assert message in user_error(capsys, main, ["fit", *FAST, *flags])
    assert not run_dirs()


def test_a_run_that_fails_after_wandb_started_leaves_nothing_and_ends_with_the_error(capsys, monkeypatch):
    from datamodules.errors import DataError

    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken(self):
        raise DataError("covid.train.csv: the disk went away")
    monkeypatch.setattr(CovidDataModule, "val_dataloader", broken)
    line = user_error(capsys, main, ["fit", *FAST])
    assert line == "error: covid.train.csv: the disk went away"
    assert not run_dirs()


# --- smaller things ---------------------------------------------------------------------------------------
def test_submission_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_submission(pd.DataFrame({"id": [0]}), tmp_path / "pred.csv")
        write_submission(["a line"], tmp_path / "prediction.txt")
    finally:
        os.umask(old)
    for name in ("pred.csv", "prediction.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert (tmp_path / "prediction.txt").read_text() == "a line\n"


def test_data_is_found_in_the_named_folder_or_one_below(tmp_path):
    write_demo_covid(tmp_path / "kaggle" / "ml2022spring-hw1", ML2022, 30, 10)
    files = CovidDataModule.locate(tmp_path / "kaggle")
    assert files.layout == ML2022 and files.train.parent.name == "ml2022spring-hw1"
    assert CovidDataModule(str(tmp_path / "kaggle")).files == files


def test_a_second_predict_says_it_replaced_the_file(capsys):
    fit()
    main(["predict", "--ckpt_path", "best", *QUIET])
    assert "replacing" not in capsys.readouterr().out
    main(["predict", "--ckpt_path", "best", *QUIET])
    assert "replacing the previous one" in capsys.readouterr().out


# --- the lecture lab's finders and critical-point command ------------------------------------------
def test_find_lr_runs_the_range_test_instead_of_training_and_prints_the_command(capsys):
    cli = fit("--find_lr=true", "--data.normalize", "true", "--data.minibatches_per_step", "1")
    out = capsys.readouterr().out.strip().splitlines()
    (run,) = run_dirs()
    assert (run / "lr_find.png").stat().st_size > 10_000 and not list(run.rglob("*.ckpt"))  # nothing trained
    # built from the run's saved config, not by editing the typed command (which dropped every `true` and kept
    # `--find_lr=true`): the config keeps --data.normalize true and has the finder off
    assert out[-1].startswith(f"Next: python -m homework.hw1 fit --config {run}/config.yaml --model.optimizer.lr ")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["find_lr"] is False and saved["data"]["normalize"] is True
    lr = float(out[-1].rsplit("--model.optimizer.lr ", 1)[1])  # the middle of the falling stretch it names
    finder = next(line for line in out if line.startswith("Learning-rate finder: "))
    start, end = (float(v) for v in finder.split("falling stretch (lr ")[1].split(",")[0].split(" to "))
    assert start < lr < end and 1e-4 < lr < 1  # (Lightning's own pick on this curve was 2.75e-07, on a rising stretch)
    assert cli.trainer.global_step == 0 and json.loads((run / "run.json").read_text())["status"] == "tuned"
    line = user_error(capsys, main, ["fit", *FAST, "--find_lr", "true"])  # HW1's whole-epoch steps
    assert "add --data.minibatches_per_step 1" in line


def test_find_batch_size_reports_the_largest_batch_that_fits(capsys):
    fit("--find_batch_size", "true", "--data.minibatches_per_step", "1", "--data.batch_size", "32")
    out = capsys.readouterr().out
    found = int(out.strip().splitlines()[-1].rsplit("--data.batch_size ", 1)[1])
    assert "Batch-size finder: " in out and found > 32 and found & (found - 1) == 0  # doubled from 32 (a CPU has room)


def test_critical_says_minimum_or_saddle_for_a_trained_checkpoint(capsys):
    fit()
    capsys.readouterr()
    main(["critical", "--ckpt_path", "best", *QUIET])
    out = capsys.readouterr().out
    assert "gradient norm" in out and "largest eigenvalues" in out and "Verdict: " in out
    assert len(run_dirs()) == 1  # evaluating makes no run directory


def test_plot_schedule_draws_the_configured_schedule_before_training(capsys):
    cli = fit("--plot_schedule", "true", "--model.lr_scheduler", "torch.optim.lr_scheduler.StepLR",
              "--model.lr_scheduler.step_size", "1")
    (run,) = run_dirs()
    assert (run / "schedule.png").stat().st_size > 10_000 and not list(run.rglob("*.ckpt"))
    assert cli.trainer.global_step == 0 and capsys.readouterr().out.strip().splitlines()[-1].startswith("Next: ")
    from homework.lab.finders import PlotSchedule

    (plotted,) = [c for c in cli.trainer.callbacks if isinstance(c, PlotSchedule)]
    # HW1's demo: 10 optimizer steps a epoch, 2 epochs; StepLR (an epoch schedule) cuts lr 10x after epoch 0
    assert plotted.lrs == pytest.approx([0.003] * 10 + [0.0003] * 10)
    line = user_error(capsys, main, ["fit", *FAST, "--plot_schedule", "true",
                                     "--model.lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"])
    assert "known only after training" in line
