"""Where a student really runs the commands: from another folder, with their own empty folders about, after a
`compare`, predicting on new inputs (issue #16, cases 2, 4, 6 and 7)."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from homework import runs
from homework.hw1 import main
from tests.conftest import QUIET, user_error

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--trainer.max_epochs", "2", *QUIET]


# --- 6. another working directory: runs/ and data/ stay in the project folder ------------------------------
def project_copy(tmp_path: Path) -> Path:
    """A checkout of the project's code in `tmp_path/proj` (runs/ and data/ would go into it)."""
    proj = tmp_path / "proj"
    for part in ("homework", "datamodules", "models", "callbacks", "adapters"):
        shutil.copytree(ROOT / part, proj / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", proj / "setup.cfg")
    return proj


def run_from(cwd: Path, proj: Path, *args: str) -> subprocess.CompletedProcess:
    """The shell command a student types in `cwd`: `python <proj>/homework/hw1.py ARGS`, output piped."""
    env = {k: v for k, v in os.environ.items() if k != "NTU_ML_HOME"}  # the default: no home chosen
    env["PYTHONPATH"] = str(proj)  # the copy's code, not this checkout's (installed editable)
    return subprocess.run([sys.executable, str(proj / "homework" / "hw1.py"), *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def test_from_another_folder_runs_and_data_are_the_projects_and_the_next_command_works_there(tmp_path):
    proj, elsewhere = project_copy(tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    fit = run_from(elsewhere, proj, "fit", *FAST)
    assert fit.returncode == 0, fit.stdout[-3000:]
    lines = fit.stdout.strip().splitlines()
    assert f"Runs and data live in the project folder, {proj} (runs/, data/)" in fit.stdout
    assert not any(elsewhere.iterdir())  # nothing in the working directory: no runs/, no data/
    (run,) = (proj / "runs" / "hw1").iterdir()
    assert (proj / "data" / "hw1-demo").is_dir()
    assert lines[-2] == f"Run directory: {run}"
    assert lines[-1] == f"Next: python {proj / 'homework' / 'hw1.py'} predict --ckpt_path {run}"

    predict = run_from(elsewhere, proj, *shlex.split(lines[-1])[3:], *QUIET)  # pasted where the user is
    assert predict.returncode == 0, predict.stdout[-3000:]
    assert (run / "pred.csv").is_file() and not any(elsewhere.iterdir())


def test_the_projects_real_data_is_used_from_another_folder(tmp_path):
    proj, elsewhere = project_copy(tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    from datamodules.covid import CovidDataModule

    CovidDataModule.write_demo(proj / "data" / "hw1")  # (standing in for the Kaggle files a student put there)
    fit = run_from(elsewhere, proj, "fit", *FAST)
    assert fit.returncode == 0, fit.stdout[-3000:]
    assert "DEMO DATA" not in fit.stdout and not (proj / "data" / "hw1-demo").exists()
    (run,) = (proj / "runs" / "hw1").iterdir()
    assert json.loads((run / "run.json").read_text())["data_dir"] == str((proj / "data" / "hw1").resolve())


def test_python_dash_m_prints_next_commands_in_the_same_form(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "homework.hw1", "fit", *FAST], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith("Next: python -m homework.hw1 predict --ckpt_path runs/hw1/")


# --- 2. a failed command removes only what it created ------------------------------------------------------
def test_a_failed_fit_keeps_the_users_empty_folders_and_the_working_directory(tmp_path, capsys):
    work = tmp_path / "empty"
    work.mkdir()
    os.chdir(work)
    user_error(capsys, main, ["fit", "--data.data_dir", "nowhere", "--trainer.default_root_dir", "x", *QUIET])
    assert Path.cwd() == work and work.is_dir()  # the working directory itself was removed before
    assert not (work / "x").exists()  # made for the run, and removed with it

    (work / "mine").mkdir()  # the user's own (empty) folder
    user_error(capsys, main, ["fit", "--data.data_dir", "nowhere", "--trainer.default_root_dir", "mine/runs", *QUIET])
    assert (work / "mine").is_dir() and not (work / "mine" / "runs").exists()


# --- 4. an unusable --trainer.default_root_dir is one line --------------------------------------------------
@pytest.mark.parametrize("where", ["a file", "under a file", "/proc"])
def test_an_unusable_root_dir_is_one_line(where, tmp_path, capsys):
    Path("notes.txt").write_text("mine")
    root = {"a file": "notes.txt", "under a file": "notes.txt/runs", "/proc": "/proc/ntu-ml-runs"}[where]
    line = user_error(capsys, main, ["fit", "--trainer.default_root_dir", root, *FAST])
    assert line.startswith(f"error: --trainer.default_root_dir {root}: cannot make a run directory there (")
    assert Path("notes.txt").read_text() == "mine"


# --- 7. `best` and the next command name the model just trained --------------------------------------------
def fake_run(parent: Path, name: str, score: float, demo: bool = False, data_dir: str = "data/hw1") -> Path:
    run = parent / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"x")
    (run / "run.json").write_text(json.dumps({
        "homework": "hw1", "data_dir": str(Path(data_dir).resolve()), "demo": demo, "split": {"seed": 1},
        "monitor": "val_mse", "mode": "min", "best_score": score, "best_epoch": 3,
        "best_checkpoint": "checkpoints/best.ckpt"}))
    return run


def test_best_and_last_never_pick_a_compare_variant(tmp_path):
    root = tmp_path / "runs" / "hw1"
    mine = fake_run(root, "2026-01-01_10-00-00_fit", 1.0)
    fake_run(root / "2026-01-01_11-00-00_compare", "2026-01-01_11-00-01_fit", 0.5)  # better, and newer
    assert runs.find_best(root).path == (mine / "checkpoints" / "best.ckpt").resolve()
    (mine / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert runs.find_last(root).path == mine / "checkpoints" / "last.ckpt"


def test_best_for_new_inputs_skips_runs_on_the_demo_set(tmp_path):
    root = tmp_path / "runs" / "hw1"
    fake_run(root, "2026-01-01_10-00-00_fit_demo", 0.1, demo=True)
    real = fake_run(root, "2026-01-01_09-00-00_fit", 2.0, data_dir="kaggle")
    assert runs.find_best(root, real_data=True).path == (real / "checkpoints" / "best.ckpt").resolve()
    shutil.rmtree(real)
    with pytest.raises(runs.DataError, match="every run under .* was trained on the generated demo data"):
        runs.find_best(root, real_data=True)


def test_the_next_command_predicts_with_the_run_just_trained_not_a_better_older_one(capsys):
    main(["fit", "--trainer.max_epochs", "30", "--model.optimizer.lr", "0.003", *QUIET])  # the better, older run
    main(["fit", *FAST])
    lines = capsys.readouterr().out.strip().splitlines()
    run = Path(lines[-2].removeprefix("Run directory: "))
    assert lines[-1] == f"Next: python -m homework.hw1 predict --ckpt_path {run}"
    main(["predict", "--ckpt_path", str(run), *QUIET])
    assert f"Using the best checkpoint of run {run.name}" in capsys.readouterr().err
    assert (run / "pred.csv").is_file()


def test_a_submission_made_from_other_inputs_is_never_replaced(capsys):
    cli = main(["fit", *FAST])
    run = cli.run_dir
    main(["predict", "--ckpt_path", str(run), *QUIET])
    first = (run / "pred.csv").read_text()
    main(["predict", "--ckpt_path", str(run), *QUIET])  # the same inputs again: replaced, and said so
    assert "replacing the previous one (same inputs)" in capsys.readouterr().out
    other = Path("other")
    shutil.copytree("data/hw1-demo", other)
    header, *rows = (other / "covid.test.csv").read_text().splitlines()
    (other / "covid.test.csv").write_text("\n".join([header, *rows[::-1]]) + "\n")  # other inputs, same format
    main(["predict", "--ckpt_path", str(run), "--data.data_dir", str(other), *QUIET])
    out = capsys.readouterr().out
    assert (run / "pred.csv").read_text() == first
    assert f"{(run / 'pred-2.csv').resolve()} (" in out and "pred.csv there was made from other inputs" in out
    assert (run / "pred-2.csv").read_text() != first
