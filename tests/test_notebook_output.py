"""What a notebook shows (issue 23): information on stdout (Jupyter draws stderr red), every command an API
function (`tune` too), and after Ctrl-C the kept epoch as the last one printed and the API call that continues."""
import contextlib
import io
import logging
import re
import sys

import pytest
import pytorch_lightning as pl

from homework import hw1
from homework.cli.api import Interrupted
from homework.command_line import python_call


class CtrlCWhenEpochEnds(pl.Callback):
    """Ctrl-C after epoch `epoch`'s checkpoint was saved, as the next epoch begins, before its line is printed
    (the callbacks a user adds come before the project's epoch lines)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            raise KeyboardInterrupt


CTRL_C = {"class_path": "tests.test_notebook_output.CtrlCWhenEpochEnds", "init_args": {"epoch": 1}}


def test_after_ctrl_c_the_kept_epoch_is_the_last_printed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        hw1.main(["fit", "--trainer.max_epochs", "20", "--trainer.callbacks+", str(CTRL_C).replace("'", '"'),
                  "--trainer.enable_model_summary", "false", "--diagnose", "false"])
    assert exit_info.value.code == 130
    out = capsys.readouterr().out.splitlines()
    epochs = [line for line in out if line.startswith("epoch ")]
    kept = next(line for line in out if line.startswith("Interrupted (Ctrl-C). Kept "))
    assert "(the end of epoch 1); best val_mse " in kept
    assert epochs[-1].startswith("epoch 1/19  val_loss ") and "train_" not in epochs[-1]  # (its train metrics: not yet)
    assert [line.split()[1] for line in epochs] == ["0/19", "1/19"]


def test_ctrl_c_in_the_api_ends_in_one_line_and_the_call_that_continues(capsys):
    with pytest.raises(KeyboardInterrupt) as interrupted:
        hw1.fit(max_epochs=20, diagnose=False, trainer={"callbacks": [CTRL_C], "enable_model_summary": False})
    assert isinstance(interrupted.value, Interrupted) and interrupted.value.__suppress_context__
    assert interrupted.value._render_traceback_() == [
        "KeyboardInterrupt: the command was interrupted; what it kept is printed above"]
    out = capsys.readouterr().out.splitlines()
    (run,) = [line.removeprefix("Run directory: ") for line in out if line.startswith("Run directory: ")]
    assert out[-1] == f"Continue: hw1.fit(resume={run!r})"


def test_the_next_command_as_the_apis_call():
    assert python_call("hw1", "fit", "--resume", "runs/hw1/a b", "--data.batch_size", 64,
                       "--trainer.accumulate_grad_batches", 2) == (
        "hw1.fit(resume='runs/hw1/a b', data__batch_size=64, trainer__accumulate_grad_batches=2)")
    assert python_call("hw3", "fit", "--config", "r/config.yaml", "--find_lr", "true", "--model.optimizer.lr",
                       "0.003") == "hw3.fit(config='r/config.yaml', find_lr=True, model__optimizer__lr=0.003)"


def test_in_a_notebook_information_goes_to_stdout_and_errors_stay_errors(monkeypatch):
    """Jupyter and Colab draw stderr red: the banner, "Seed set to", Lightning's lines and the checkpoints' go to
    stdout in a notebook (here: as the kernel's environment says). A handler made on stderr before the call (as
    Lightning's are) is put back afterwards."""
    monkeypatch.setenv("JPY_PARENT_PID", "1")
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger("lightning_fabric.utilities.seed").addHandler(handler)
    monkeypatch.setattr(sys, "stderr", err)
    try:
        with contextlib.redirect_stdout(out):
            hw1.fit("--trainer.max_steps 2", diagnose=False, trainer={"enable_model_summary": False})
    finally:
        logging.getLogger("lightning_fabric.utilities.seed").removeHandler(handler)
    assert "Seed set to" in out.getvalue() and "Run directory: " in out.getvalue()
    assert err.getvalue() == "" and handler.stream is err


def test_tune_is_an_api_function_too(capsys):
    result = hw1.tune("--n_trials 1", max_epochs=1, trainer={"enable_model_summary": False})
    assert result.command == "tune" and len(result.study.trials) == 1
    assert result.best_score == result.study.best_value and result.run_dir.is_dir()
    assert result.best_checkpoint.is_file() and hw1.tune.__name__ == "tune"


# --- a checkout that was not installed ---------------------------------------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_a_script_in_a_checkout_not_installed_runs_that_checkouts_code(tmp_path):
    """`python homework/hw1.py` puts the checkout it is in first on the path: without `pip install -e .` it still
    finds the project (before: `No module named 'homework'`), and beside another installed copy it runs its own."""
    import shutil
    import subprocess

    copy = tmp_path / "checkout"
    for part in ("homework", "datamodules", "models", "callbacks", "adapters"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    script = (f"import runpy, sys\nsys.argv = ['homework/hw1.py', 'fit', '--print_config']\n"
              f"try:\n    runpy.run_path('{copy}/homework/hw1.py', run_name='__main__')\nexcept SystemExit as e:\n"
              "    print('exit', e.code)\nprint(sys.modules['homework'].__file__)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout.strip().splitlines()
    assert out[-2:] == ["exit 0", str(copy / "homework" / "__init__.py")], done.stderr[-2000:]


def test_the_startup_check_names_every_dependency_of_setup_cfg():
    """`check_installed` looks for each package setup.cfg installs (a new dependency added there and not here
    would be an import traceback in a kernel that lacks it)."""
    import configparser

    from homework.cli import startup

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    required = {re.split(r"[\[<>=!~ ]", line.strip())[0].lower()
                for line in config["options"]["install_requires"].splitlines()
                if line.strip() and not line.strip().startswith("#")}
    assert {package.lower() for package in startup.REQUIRED.values()} == required


def test_a_missing_dependency_is_one_line_saying_pip_install(monkeypatch, capsys):
    from homework.cli import startup

    monkeypatch.setitem(startup.REQUIRED, "no_such_module_here", "sacrebleu")
    with pytest.raises(SystemExit) as exit_info:
        startup.check_installed()
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: sacrebleu is not installed in this Python ({sys.executable}): run `pip install "
                           f"-e .` in {ROOT} (in a notebook: !pip install -e .)")


# --- the notebook opened alone -----------------------------------------------------------------------------
NOWHERE = '''# (the test's own cell: this kernel finds no project anywhere, as Colab's does for a notebook
# uploaded alone)
import importlib.metadata, importlib.util
_distribution, _find_spec = importlib.metadata.distribution, importlib.util.find_spec
def _no_project(name, *args):
    if name == "ntu-ml-lightning":
        raise importlib.metadata.PackageNotFoundError(name)
    return _distribution(name, *args)
importlib.metadata.distribution = _no_project
_distributions = importlib.metadata.distributions
importlib.metadata.distributions = lambda **kw: [] if kw.get("name") == "ntu-ml-lightning" else _distributions(**kw)
importlib.util.find_spec = lambda name, *args: None if name.split(".")[0] == "homework" else _find_spec(name, *args)
'''


def test_the_notebook_opened_alone_says_in_one_line_what_works(tmp_path, monkeypatch):
    """Uploaded alone to Colab (no checkout, nothing installed, no REPO_URL): the project cell ends the run with
    one line naming the ways that work, no traceback; the cells before it ran."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.delenv("PYTHONPATH", raising=False)
    book = nbformat.read(ROOT / "notebooks" / "hw1.ipynb", as_version=4)
    book.cells.insert(0, nbformat.v4.new_code_cell(NOWHERE))
    client = NotebookClient(book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError):  # nbclient stops at the first cell that raises
        client.execute()
    code = [c for c in book.cells if c.cell_type == "code"]
    ran = [c for c in code if c.get("execution_count") is not None]
    assert len(ran) == 4 and ran[-1].source.startswith("import importlib.metadata")  # ours, parameters, GPU, project
    (error,) = [o for o in ran[-1].outputs if o.output_type == "error"]
    assert error.traceback == [(
        "ProjectNotFound: the project is not here: put its folder beside this notebook (uploaded or unzipped), or set "
        "PROJECT_DIR to it (e.g. on Google Drive), or REPO_URL to the git URL of your copy, in the parameters cell")]
    assert "".join(o.get("text", "") for o in ran[2].outputs).startswith(("No NVIDIA GPU here", "name, memory"))
    assert [p.name for p in tmp_path.iterdir()] == [".ipython"]  # nothing written but IPython's own (HOME is here)
