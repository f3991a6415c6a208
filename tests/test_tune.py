"""`tune`: the search space's format and its one-line mistakes; studies of a few 2-epoch HW1 trials on the demo
data: with the default journal storage (results, `best`, best_config.yaml re-run, a Ctrl-C and a resume), and
with a real PostgreSQL server started here (two workers sharing a study, a SIGKILLed worker's trial retried).

Trials are HW1's tiny MLP for 2 epochs: a trial costs its parse and build (~2 s on a busy 2-core machine), not
its training; the progress bar and model summary are off (QUIET) as these tests are about the study, not the
fits' output. W&B is off (conftest): the trials' W&B group is checked in their saved configs. The file took
2.5 min on the shared 2-core machine at load 5 (the PostgreSQL workers, in subprocesses, most of it);
`pytest -m slow` adds every other homework's default space through its parser and trials on two processes."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from homework.cli.arguments import CONFIG_DIR
from homework import registry
from homework.hw1 import main
from homework.lab import search_space, tune
from benchmarks import tune_workers
from tests.conftest import QUIET, user_error

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--trainer.max_epochs", "2", *QUIET]
#: A small space: two examples per option, so the CLI checks it in two parses
SMALL = """\
model.optimizer.lr: {loguniform: [1.0e-3, 3.0e-2]}
model.hidden_dims: [[16], [32, 16]]
"""


def space(text: str = SMALL, name: str = "space.yaml") -> str:
    Path(name).write_text(text)
    return name


# --- the space ---------------------------------------------------------------------------------------------
def test_every_kind_of_range_becomes_the_flags_of_a_fit():
    params = search_space.parse(yaml.safe_load("""
model.optimizer.lr: {loguniform: [1e-4, 1e-2]}     # (YAML reads 1e-4 as text: taken as the number)
model.dropout: {uniform: [0.0, 0.5]}
model.num_layers: {int: [1, 4]}
data.features: [8, all]
model.hidden_dims: [[64, 32], [32]]
trainer.max_epochs: 7
model.optimizer:
  torch.optim.SGD: {lr: {loguniform: [1.0e-3, 0.1]}, momentum: 0.9}
  torch.optim.Adam: {}
"""))
    trial = optuna.trial.FixedTrial({
        "model.optimizer.lr": 1e-3, "model.dropout": 0.25, "model.num_layers": 3, "data.features": "all",
        "model.hidden_dims": "[32]", "model.optimizer": "torch.optim.SGD", "model.optimizer.lr (SGD)": 0.05})
    flags = search_space.flag_pairs(search_space.suggest(trial, params))
    assert flags == ["--model.optimizer.lr", "0.001", "--model.dropout", "0.25", "--model.num_layers", "3",
                     "--data.features", "all", "--model.hidden_dims", "[32]", "--trainer.max_epochs", "7",
                     "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.05",
                     "--model.optimizer.momentum", "0.9"]
    adam = optuna.trial.FixedTrial({**trial.params, "model.optimizer": "torch.optim.Adam"})
    assert search_space.flag_pairs(search_space.suggest(adam, params))[-2:] == ["--model.optimizer", "torch.optim.Adam"]
    # every value the CLI must type-check, in as few command lines as the option with most examples has
    sets = search_space.validation_sets(params)  # the option with most examples: the class (SGD's lr 2, Adam 1)
    assert len(sets) == 3
    assert {dict(s)["model.optimizer"] for s in sets} == {"torch.optim.SGD", "torch.optim.Adam"}
    assert {str(dict(s)["model.hidden_dims"]) for s in sets} == {"[64, 32]", "[32]"}
    assert {dict(s)["data.features"] for s in sets} == {8, "all"}


def test_every_homework_ships_a_space_that_loads():
    for n in range(1, 6):
        params = search_space.load(CONFIG_DIR / f"hw{n}_space.yaml")
        assert any(p.kind != "fixed" for p in params)


@pytest.mark.parametrize("text, message", [
    ("model.dropout: {uniform: [0.5, 0.1]}", "model.dropout: uniform [0.5, 0.1] is an empty range"),
    ("model.optimizer.lr: {loguniform: [0, 0.1]}", "needs low > 0"),
    ("model.dropout: {uniform: [low, 0.1]}", "uniform takes two numbers"),
    ("model.num_layers: {int: [1.5, 4]}", "int takes two whole numbers"),
    ("model.dropout: {normal: [0, 1]}", "unknown range 'normal'"),
    ("model.hidden_dims: []", "an empty list of choices"),
    ("[1, 2]", "a search space maps options to ranges"),
    ("model.dropout: [0.1, 0.1]", "a choice is listed twice"),
    ("model.dropout: {uniform: [0.0, 0.5]", "not valid YAML"),
])
def test_a_bad_space_is_one_line_naming_the_file_before_anything_runs(capsys, text, message):
    line = user_error(capsys, main, ["tune", "--space", space(text), *SHORT])
    assert line.startswith("error: space.yaml: ") and message in line, line
    assert not Path("runs").exists()


def test_a_missing_space_file_or_a_bad_option_is_one_line(capsys):
    assert user_error(capsys, main, ["tune", "--space", "nope.yaml"]) == \
        "error: nope.yaml: no such file (a search space is a YAML file, e.g. homework/configs/hw1_space.yaml)"
    assert "--n_trials 0: give a positive whole number" in user_error(capsys, main, ["tune", "--n_trials", "0"])


def test_the_cli_checks_the_options_and_their_types_before_any_trial(capsys):
    """Unknown option (with the closest one), a value its option's type refuses, a class that does not exist:
    checked by the fit's own parser, before the study exists."""
    line = user_error(capsys, main, ["tune", "--space", space("model.dropuot: {uniform: [0.0, 0.5]}"), *SHORT])
    assert line == "error: space.yaml: unrecognized option --model.dropuot; did you mean --model.dropout?"
    line = user_error(capsys, main, ["tune", "--space", space(SMALL + "model.batch_norm: [true, maybe]"), *SHORT])
    assert line.startswith("error: space.yaml: --model.batch_norm: 'maybe' is not"), line
    line = user_error(capsys, main, ["tune", "--space", space(SMALL + "model.dropout: [0.1]"),
                                     "--model.dropout", "0.2", *SHORT])
    assert "--model.dropout is both searched by the space and given on the command line" in line
    assert not Path("runs").exists()


# --- studies on one machine (journal file) -----------------------------------------------------------------
def trial_dirs(study_dir: Path) -> list[Path]:
    return sorted(d for d in study_dir.iterdir() if (d / "run.json").is_file())


def test_three_trials_with_the_default_space_then_best_and_best_config(capsys):
    study = main(["tune", "--n_trials", "3", *SHORT])
    out = capsys.readouterr().out
    study_dir = Path("runs/hw1/tune_hw1_space")
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3
    dirs = trial_dirs(study_dir)
    assert len(dirs) == 3 and (study_dir / tune.JOURNAL).is_file()
    records = [json.loads((d / "run.json").read_text()) for d in dirs]
    assert sorted(r["trial"] for r in records) == [0, 1, 2] and {r["study"] for r in records} == {"hw1_space"}
    for d in dirs:  # each trial: its options, W&B grouped under the study, pruning wired in
        config = yaml.safe_load((d / "config.yaml").read_text())
        assert config["trainer"]["logger"]["init_args"]["group"] == "hw1_space"
        assert config["trainer"]["callbacks"][-1]["class_path"] == tune.PRUNING
        assert config["trainer"]["max_epochs"] == 2 and config["diagnose"] is False
    best = study.best_trial
    assert (study_dir / "study.png").stat().st_size > 20_000
    table = (study_dir / "trials.md").read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("|")]
    assert rows[0][:4] == ["rank", "trial", "val_mse", "epochs"] and "model.optimizer.lr" in rows[0]
    assert rows[2][:4] == ["1", str(best.number), f"{best.value:.4f}", "2"] and rows[2][-1] == \
        Path(best.user_attrs["run_dir"]).name
    assert len(rows) == 2 + 3 and all(line in out for line in table.splitlines() if line.startswith("|"))
    best_dir = Path(best.user_attrs["run_dir"])
    assert f"Best: trial {best.number}, val_mse {best.value:.4f}" in out
    assert out.strip().splitlines()[-1].endswith(f"predict --ckpt_path {best_dir}")

    # `best` now means the study's best trial, and says so
    main(["predict", "--ckpt_path", "best", *QUIET])
    err = capsys.readouterr().err
    assert f"trial {best.number} of study hw1_space (tune_hw1_space/{best_dir.name})" in err
    assert f"val_mse {best.value:.4f}" in err

    # best_config.yaml trains the best trial again as a normal fit (outside the study), to the same score
    config = yaml.safe_load((study_dir / "best_config.yaml").read_text())
    assert config["trainer"]["callbacks"] is None and config["trainer"]["logger"]["init_args"]["group"] is None
    assert config["diagnose"] is True
    cli = main(["fit", "--config", str(study_dir / "best_config.yaml"), *QUIET])
    assert cli.run_dir.parent.name == "hw1"  # a normal run, not in the study's directory
    assert float(cli.trainer.checkpoint_callback.best_model_score) == pytest.approx(best.value, rel=1e-4)
    assert "study" not in json.loads((cli.run_dir / "run.json").read_text())


class CtrlCInSecondTrial:
    """make_cli for `tune_command`: the second trial's fit gets a Ctrl-C after its first epoch."""

    def __init__(self):
        self.fits = 0

    def __call__(self, args):
        from homework.cli.main import HomeworkCLI
        from datamodules.covid import CovidDataModule
        from models.regression import CovidRegressor

        if "--print_config" not in args:
            self.fits += 1
            if self.fits == 2:
                args = args + ["--trainer.callbacks+=tests.test_tune.PressCtrlC"]
        return HomeworkCLI(CovidRegressor, CovidDataModule, "hw1.yaml", LINKS, args)


LINKS = {"data.num_features": "model.in_features", "data.minibatches_per_step": "model.minibatches_per_step"}


class PressCtrlC(__import__("pytorch_lightning").Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        raise KeyboardInterrupt


def test_an_interrupted_study_continues_and_keeps_its_finished_trials(capsys, monkeypatch):
    from datamodules.covid import CovidDataModule
    from models.regression import CovidRegressor

    # Optuna's own handler holds the stderr of when optuna was imported; pytest (9.2) adds handlers of its own
    # there, without a stream, which stay as they are.
    for handler in logging.getLogger("optuna").handlers:
        if type(handler) is logging.StreamHandler:
            monkeypatch.setattr(handler, "stream", sys.stderr)

    args = ["tune", "--space", space(), "--n_trials", "3", *SHORT]
    with pytest.raises(SystemExit) as stopped:
        tune.tune_command(args, CtrlCInSecondTrial(), CovidRegressor, CovidDataModule)
    assert stopped.value.code == 130
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "failed" not in err, err  # Optuna's warning with KeyboardInterrupt's
    assert out.rstrip().splitlines()[-1].startswith("Continue: ")
    assert "Interrupted (Ctrl-C): the study keeps its 1 finished trial(s)" in out
    assert "Continue: " in out and "tune --space space.yaml --n_trials 3" in out
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        "runs/hw1/tune_space/" + tune.JOURNAL))
    first = optuna.load_study(study_name="space", storage=storage).get_trials()
    assert [t.state for t in first] == [TrialState.COMPLETE, TrialState.FAIL]

    study = main(args)  # the same command again
    trials = study.get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3 and len(trials) == 4
    assert trials[0].value == first[0].value and trials[0].params == first[0].params  # kept, not run again
    assert "Study space: 3 complete, 0 pruned, 1 failed" in capsys.readouterr().out
    study = main(args)  # once more: nothing left to run, the results written again
    assert len(study.get_trials()) == 4


def test_a_study_continued_with_an_edited_space_is_one_line_and_runs_nothing(capsys):
    args = ["tune", "--space", space(), "--n_trials", "1", *SHORT]
    main(args)
    Path("space.yaml").write_text(SMALL + "# a comment changes nothing\n")
    main(args[:4] + ["2", *SHORT])  # the same space: the study goes on
    space(SMALL.replace("3.0e-2", "1.0e-1"))  # the student widens a range and runs the same command
    line = user_error(capsys, main, args[:4] + ["3", *SHORT])
    assert line == ("error: --study space: that study searched another space than space.yaml (it keeps the one it "
                    "began with); give this search another --study name, or search the study's space again")
    assert len(optuna.load_study(study_name="space", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend("runs/hw1/tune_space/" + tune.JOURNAL))).trials) == 2


def test_a_trial_worse_than_the_median_is_pruned(capsys):
    """Five finished trials (written into the study directly, with their per-epoch scores) set the median; a
    trial with a learning rate far too small is stopped once the warm-up (a quarter of the epochs) is over, its
    run kept and marked pruned."""
    from optuna.distributions import FloatDistribution

    study_dir = Path("runs/hw1/tune_space")
    study_dir.mkdir(parents=True)
    study = optuna.create_study(study_name="space", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / tune.JOURNAL))))
    lr = FloatDistribution(1e-8, 1e-1, log=True)
    for k in range(5):
        study.add_trial(optuna.trial.create_trial(
            params={"model.optimizer.lr": 0.01}, distributions={"model.optimizer.lr": lr}, value=5.0 + k,
            intermediate_values={epoch: 50.0 - 5 * epoch + k for epoch in range(8)}))
    study.enqueue_trial({"model.optimizer.lr": 1e-7})
    text = "model.optimizer.lr: {loguniform: [1.0e-8, 1.0e-1]}\n"
    study = main(["tune", "--space", space(text), "--n_trials", "6", "--trainer.max_epochs", "8",
                  "--early_stopping.patience", "100", *QUIET])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5 + [TrialState.PRUNED]
    pruned = trials[-1]
    assert pruned.params == {"model.optimizer.lr": 1e-7} and sorted(pruned.intermediate_values) == [0, 1, 2]
    record = json.loads((Path(pruned.user_attrs["run_dir"]) / "run.json").read_text())
    assert record["status"] == "pruned" and record["epochs"] == 3  # after epoch 2 (the warm-up: 8 // 4 epochs)
    assert "Trial 5 pruned after epoch 2" in capsys.readouterr().out


# --- many workers on one PostgreSQL study ------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of Debian's package, on loopback, a free port, a temporary data directory, run by an
    unprivileged user (`nobody` when the tests run as root: the server refuses root); stopped afterwards."""
    if tune_workers.postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="tune-postgres-"))
    try:
        url, stop = tune_workers.postgres(folder)
        try:
            yield url
        finally:
            stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def worker(args: list[str], log: str) -> subprocess.Popen:
    """`python -m homework.hw1 tune ...` in its own process (and process group), output to a file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "homework.hw1", "tune", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_two_workers_share_one_postgresql_study_and_run_exactly_n_trials(postgres):
    args = ["--space", space(), "--storage", postgres, "--study", "shared", "--n_trials", "4", *SHORT]
    workers = [worker(args, f"worker{k}.log") for k in range(2)]
    codes = [w.wait(timeout=300) for w in workers]
    assert codes == [0, 0], [Path(f"worker{k}.log").read_text()[-2000:] for k in range(2)]
    trials = optuna.load_study(study_name="shared", storage=tune._driver(postgres)).get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4, [(t.number, t.state) for t in trials]
    assert len({t.number for t in done}) == 4 and len({t.user_attrs["run_dir"] for t in done}) == 4
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both took part
    assert sorted(d.name for d in trial_dirs(Path("runs/hw1/tune_shared"))) == \
        sorted(Path(t.user_attrs["run_dir"]).name for t in done)  # every trial ran once: one run directory each
    for k in range(2):  # each worker wrote the study's results (from the database) at its end
        assert "Study shared: " in Path(f"worker{k}.log").read_text()


def test_a_killed_workers_trial_is_failed_by_heartbeat_and_run_again(postgres, capsys):
    args = ["--space", space(), "--storage", postgres, "--study", "killed", "--heartbeat_interval", "1", *QUIET]
    # a worker whose trials run "forever" (HW1's demo epochs take milliseconds)
    slow = worker([*args, "--n_trials", "2", "--trainer.max_epochs", "100000", "--early_stopping.patience",
                   "100000"], "slow.log")
    deadline = time.time() + 120
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="killed", storage=tune._driver(postgres))
            # a trial is RUNNING from the moment it is asked for, before its parameters are drawn
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.params]
        except KeyError:  # (not created yet)
            pass
    assert running, Path("slow.log").read_text()[-2000:]
    time.sleep(2)  # training (well past its first heartbeat)
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait(timeout=30)
    killed = running[0]
    assert set(killed.params) == {"model.optimizer.lr", "model.hidden_dims"}
    time.sleep(2.5)  # past the grace period (2 x 1 s): stale
    study = main(["tune", *args, "--n_trials", "2", "--trainer.max_epochs", "2"])
    trials = study.get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    retried = [t for t in done
               if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params


# --- slow (pytest -m slow): every homework's space through its CLI, trials on two processes ---------------
@pytest.mark.slow
@pytest.mark.parametrize("homework", registry.names())
def test_every_default_space_passes_its_homeworks_parser(homework, capsys):
    import importlib

    module = importlib.import_module(f"homework.{homework}")
    with pytest.raises(SystemExit) as done:
        module.main(["tune", "--print_config"])
    assert done.value.code == 0 and yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert not Path("runs").exists()


@pytest.mark.slow
def test_trials_on_two_processes_follow_process_0():
    """`--trainer.devices 2 --trainer.strategy ddp`: Lightning starts process 1 for the first trial; it trains
    each trial process 0 sends and ends with the study; one run directory per trial, written by process 0. W&B as
    a user without a login has it: offline (a W&B call on process 0 alone once made every multi-device fit hang)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "homework.hw1", "tune", "--space", space(), "--n_trials", "3",
                             "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                             *SHORT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("Initializing distributed") + result.stderr.count("Initializing distributed") >= 2
    assert len(trial_dirs(Path("runs/hw1/tune_space"))) == 3
    assert sorted(p.name for p in Path("runs/hw1").iterdir()) == ["tune_space"]  # (no stray rank directories)
    assert "Study space: 3 complete" in result.stdout
    assert all(list(d.glob("wandb/offline-run-*")) for d in trial_dirs(Path("runs/hw1/tune_space")))  # tracked


def test_the_study_figure_leaves_matplotlibs_style_as_it_was(tmp_path):
    """Optuna's plots call `plt.style.use("ggplot")`; every later figure of the process (a learning curve in the
    same notebook) would have had its grey background."""
    import matplotlib

    from homework.lab.study_results import plot_study

    study = optuna.create_study(direction="minimize")
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 4) ** 2, n_trials=3)
    before = dict(matplotlib.rcParams)
    plot_study(study, tmp_path / "study.png", "a study", "val_loss")
    assert (tmp_path / "study.png").is_file()
    assert {k: v for k, v in matplotlib.rcParams.items() if before[k] != v} == {}
