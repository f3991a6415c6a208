"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient + ipykernel), on the demo data.

The parameters cell (tagged `parameters`) is replaced, as papermill does, by a short run with each homework's
smallest model (its tiny recipe, homework/configs/hwN_tiny.yaml); every other cell runs as a student runs it,
`!python homework/hwN.py fit` included. Checked: every code cell ran without an error, the submission file is
in the run's directory, the fit printed its last lines (Run directory, Next), and no output holds a redrawn line
(`\\r`) or an ANSI code (`\\x1b[`). (IPython runs `!` commands on a pseudo-terminal, which ends every line with
`\\r\\n`: that is a newline, and is read as one.) Colab-only cells skip themselves outside Colab.

A Kaggle Notebook has Lightning but not this project, and every kernel of this machine (and of CI's venv) sees the
checkout's editable install: so HW1's notebook also runs in a kernel of a venv that has every package this
interpreter has except the project (kernel_without_the_project), from a copy of the checkout made read-only as a
Kaggle dataset is: the install cell copies and installs it (pip install -e .; its build backend comes from PyPI,
and the test skips when PyPI cannot be reached), then every cell runs. In that kernel, an install without PyPI
and a REPO_URL that cannot be cloned each stop the notebook with one line.

Every notebook is in the default run, as CI runs it (each is ~15 s of imports in the kernel and in `!python`,
then seconds of work). W&B is off here as in most tests (test_api.py checks a call with W&B offline leaves nothing
behind; offline, W&B prints nothing of its own in a notebook, which running these with W&B on shows).
"""
import fnmatch
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from homework import registry

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def short_run(homework: str) -> dict:
    """The parameters of a run of a few seconds: the homework's tiny model, nothing downloaded."""
    args = registry.tiny(homework)
    options = {name.removeprefix("--"): value for name, value in zip(args[::2], args[1::2])}
    options["trainer.enable_model_summary"] = False
    if homework == "hw1":
        options["trainer.max_epochs"] = 3
    return {"EPOCHS": None, "MAX_STEPS": None, "DATA_DIR": None, "RUNS_DIR": None, "USE_DRIVE": True,
            "KAGGLE": False, "GDOWN_FILES": {}, "OPTIONS": options, "PROJECT_DIR": "", "REPO_URL": ""}


def with_parameters(book: nbformat.NotebookNode, values: dict) -> nbformat.NotebookNode:
    """The notebook with its parameters cell's source replaced by `values` (papermill's injection)."""
    (cell,) = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    return book


def outputs(book: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """(cell index, text) of every text output: streams, results, errors."""
    found = []
    for index, cell in enumerate(book.cells):
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            text += "\n".join(output.get("traceback", []))
            found.append((index, text if isinstance(text, str) else "".join(text)))
    return found


def run_notebook(homework: str, tmp_path: Path, monkeypatch) -> tuple[nbformat.NotebookNode, float]:
    """Execute notebooks/<homework>.ipynb in a fresh kernel of this interpreter (which has this checkout) started in
    `tmp_path`; runs and data go there too."""
    monkeypatch.setenv("NTU_ML_HOME", str(tmp_path))  # (absolute: the notebook moves to the project folder)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::DeprecationWarning")
    book = with_parameters(nbformat.read(NOTEBOOKS / f"{homework}.ipynb", as_version=4), short_run(homework))
    return book, execute(book, tmp_path)


def execute(book: nbformat.NotebookNode, folder: Path, kernel_name: str = "python3") -> float:
    """Run every cell of `book` in a fresh kernel started in `folder`; the seconds it took. The checkout is left as
    it was (the notebook may run in the project folder, never writing there)."""
    before = project_files()
    started = time.perf_counter()
    NotebookClient(book, timeout=240, kernel_name=kernel_name, resources={"metadata": {"path": str(folder)}}).execute()
    seconds = time.perf_counter() - started
    assert project_files() == before
    return seconds


def project_files() -> set[Path]:
    """The project folder's entries, and those of its runs/ and data/ folders if it has them."""
    return {*ROOT.iterdir(), *(p for folder in ("runs", "data") if (ROOT / folder).is_dir()
                                for p in (ROOT / folder).rglob("*"))}


def check(book: nbformat.NotebookNode, homework: str, home: Path) -> None:
    """Every cell ran, nothing redrew a line or coloured it, the fit printed its last lines, a learning curve was
    shown, and the submission is in a run's directory of `home`/runs/<homework> (`home`: NTU_ML_HOME or the project)."""
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    for index, text in outputs(book):
        plain = text.replace("\r\n", "\n")
        assert "\r" not in plain, f"cell {index} redraws a line: {plain[max(0, plain.find(chr(13)) - 200):][:400]!r}"
        assert "\x1b[" not in plain, f"cell {index} holds an ANSI code: {plain[:400]!r}"
    filename = registry.module(homework).HOMEWORK.datamodule_class.submission_filename
    (submission,) = (home / "runs" / homework).glob(f"*/{filename}")
    assert submission.stat().st_size > 0
    (fit_cell,) = [c for c in code if c.source.startswith(f"!python homework/{homework}.py fit")]
    fit_text = "".join(o.get("text", "") for o in fit_cell.outputs).replace("\r\n", "\n").strip().splitlines()
    assert fit_text[-2].startswith("Run directory: ")
    assert fit_text[-1].startswith(f"Next: python homework/{homework}.py")
    assert any(line.startswith("epoch 0") for line in fit_text)  # one line per epoch on the notebook's pty
    shown = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert shown, "no learning curve shown"


def test_the_hw1_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    book, seconds = run_notebook("hw1", tmp_path, monkeypatch)
    check(book, "hw1", tmp_path)
    (install,) = [c for c in book.cells if c.source.startswith("import importlib.metadata")]
    assert printed(install) == [f"Project folder: {ROOT}"]  # installed already (CI: its venv), so not installed again
    fits = [d for d in (tmp_path / "runs" / "hw1").iterdir()
            if json.loads((d / "run.json").read_text())["command"] == "fit"]
    assert len(fits) == 1  # trained once: `hw1.fit(FIT)` is shown as the alternative to `!python homework/hw1.py fit`
    print(f"hw1 notebook: {seconds:.1f} s")


@pytest.mark.parametrize("homework", [hw for hw in registry.names() if hw != "hw1"])  # (HW1's: above)
def test_each_notebook_runs_top_to_bottom(homework, tmp_path, monkeypatch):
    book, seconds = run_notebook(homework, tmp_path, monkeypatch)
    check(book, homework, tmp_path)
    print(f"{homework} notebook: {seconds:.1f} s")


def test_the_notebooks_are_generated_and_committed_without_outputs(tmp_path, monkeypatch):
    """notebooks/make_notebooks.py writes exactly the committed files (none edited by hand), and they hold no
    outputs or execution counts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(maker.HOMEWORKS) == sorted(registry.names())
    for homework in maker.HOMEWORKS:
        committed = (NOTEBOOKS / f"{homework}.ipynb").read_text(encoding="utf-8")
        assert committed == nbformat.writes(maker.notebook(homework)) + "\n", f"{homework}.ipynb: regenerate it"
        book = nbformat.reads(committed, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
        tags = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tags) == 1 and book.cells.index(tags[0]) == 1


# --- a Kaggle Notebook: Lightning installed, the project not ---------------------------------------------------
#: pip's cache, read before conftest points HOME at each test's folder (the install's build backend is kept there)
PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                                   / "pip")
#: the project's own entries in a site-packages folder (pip install -e: its metadata, the editable finder and .pth)
OURS = ("ntu_ml_lightning*", "ntu-ml-lightning*", "__editable__*ntu_ml_lightning*")


def site_folders() -> list[Path]:
    """This interpreter's site-packages folders, in the order they are searched (CI's: its fresh venv's)."""
    found = []
    for folder in [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]:
        if Path(folder).is_dir() and Path(folder).resolve() not in found:
            found.append(Path(folder).resolve())
    return found


def ours(entry: Path) -> bool:
    """Whether a site-packages entry is this project's install (a .pth naming the checkout counts too)."""
    return any(fnmatch.fnmatch(entry.name, pattern) for pattern in OURS) or (
        entry.suffix == ".pth" and str(ROOT) in entry.read_text(errors="replace"))


def pypi_unreachable() -> str | None:
    """Why PyPI cannot be reached from here (as pip would, through a proxy the environment names), None if it can."""
    try:
        urllib.request.urlopen(urllib.request.Request("https://pypi.org/simple/setuptools/", method="HEAD"), timeout=20)
    except OSError as error:  # (URLError, a timeout, a refused connection)
        return str(error)
    return None


def kernel_without_the_project(folder: Path, monkeypatch) -> Path:
    """A Jupyter kernel named "kaggle" as a Kaggle Notebook has one: a Python with every package this one has (torch,
    Lightning, ipykernel, ...) but not this project. Returns its python.

    A fresh venv (no system site packages) whose .pth adds, as site folders, one folder of symlinks per site-packages
    folder of this interpreter, without the project's entries: so .pth files there are processed as here (a folder
    named by a plain .pth line would not be), and pip counts those packages as installed but outside the venv (it
    installs into the venv, never removing or changing one of them)."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # (with pip: `!pip` is the kernel's own)
    python = venv / "bin" / "python"
    lines = []
    for index, source in enumerate(site_folders()):
        mirror = folder / "preinstalled" / str(index)
        mirror.mkdir(parents=True)
        for entry in source.iterdir():
            if not ours(entry):
                (mirror / entry.name).symlink_to(entry)
        lines.append(f"import site; site.addsitedir({str(mirror)!r})")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "preinstalled.pth").write_text("\n".join(lines) + "\n")
    spec = folder / "jupyter" / "kernels" / "kaggle"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "Kaggle",
        "language": "python", "env": {"PATH": os.pathsep.join([str(venv / "bin"), os.environ["PATH"]])}}))
    monkeypatch.setenv("JUPYTER_PATH", str(folder / "jupyter"))
    return python


#: what a cell of the kernel above prints: the project's distribution, and whether `homework` can be imported
INSTALLED = """import importlib.metadata, importlib.util, json
try:
    print(json.loads(importlib.metadata.distribution("ntu-ml-lightning").read_text("direct_url.json"))["url"])
except importlib.metadata.PackageNotFoundError:
    print("not installed")
print(importlib.util.find_spec("homework") is not None, importlib.util.find_spec("pytorch_lightning") is not None)
"""

#: the test's own first cell: the folder is read-only, as a Kaggle dataset (/kaggle/input/...) is. (Only a read-only
#: mount is read-only to root, whom this suite runs as; so os.access, which the notebook asks, says so.)
READ_ONLY = """# (the test's own cell: {folder} is read-only, as a Kaggle dataset is)
import os
_access = os.access
def _read_only(path, mode, *args, **kwargs):
    if mode & os.W_OK and os.path.abspath(path).startswith({folder!r}):
        return False
    return _access(path, mode, *args, **kwargs)
os.access = _read_only
"""


@pytest.fixture
def bare_kernel(tmp_path, monkeypatch) -> Path:
    """The kernel "kaggle" (kernel_without_the_project), checked to have Lightning but not the project, and the
    environment a Kaggle Notebook has: no PYTHONPATH, no NTU_ML_HOME. Returns its python."""
    python = kernel_without_the_project(tmp_path, monkeypatch)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("NTU_ML_HOME")  # the default: runs/ and data/ in the project folder
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::DeprecationWarning")
    monkeypatch.setenv("PIP_CACHE_DIR", PIP_CACHE)
    assert subprocess.run([python, "-c", INSTALLED], capture_output=True, text=True, cwd=tmp_path,
                          check=True).stdout.split() == ["not", "installed", "False", "True"]
    return python


@pytest.fixture
def kaggle(bare_kernel, tmp_path) -> tuple[Path, Path, Path, nbformat.NotebookNode]:
    """A Kaggle Notebook: Lightning preinstalled, the project not (the kernel "kaggle"); the project's folder added as
    a dataset (read-only), named by `PROJECT_DIR` as docs/notebooks.md says; the notebook in its own folder. Returns
    the kernel's python, the dataset, the notebook's folder and HW1's notebook with the short run's parameters."""
    dataset = tmp_path / "input" / "ntu-ml-lightning"  # this checkout's files (Kaggle's /kaggle/input/<dataset>)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():  # (a file deleted but not yet committed is listed too)
            (dataset / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dataset / name)
    working = tmp_path / "kaggle working"  # the notebook's folder (Kaggle's /kaggle/working; with a space, as in
    working.mkdir()                        # Drive's "Colab Notebooks", which the install's file:// URL quotes)
    book = with_parameters(nbformat.read(NOTEBOOKS / "hw1.ipynb", as_version=4),
                           {**short_run("hw1"), "PROJECT_DIR": str(dataset)})
    book.cells.insert(0, nbformat.v4.new_code_cell(READ_ONLY.format(folder=str(dataset))))
    return bare_kernel, dataset, working, book


def printed(cell: nbformat.NotebookNode, stream: str = "stdout") -> list[str]:
    """The lines a cell printed on one stream."""
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == stream).strip().splitlines()


def test_a_kernel_with_lightning_but_not_the_project_installs_it_and_runs_through(kaggle, tmp_path):
    """The install cell copies the read-only project beside the notebook and installs it there (`pip install -e .`,
    the installed torch kept), then every cell runs as in the tests above, the runs in the copy (the default: no
    NTU_ML_HOME). Only HW1's notebook: the install cell is the same in every notebook (notebooks/make_notebooks.py),
    and each run here costs a venv and an install more."""
    python, dataset, working, book = kaggle
    untouched = sorted(dataset.rglob("*"))
    (install,) = [c for c in book.cells if c.source.startswith("import importlib.metadata")]
    book.cells.append(nbformat.v4.new_code_cell(install.source))  # and run again at the end, in the same kernel
    try:
        seconds = execute(book, working, kernel_name="kaggle")
    except CellExecutionError as error:
        if "InstallFailed: pip install -e . in" in str(error) and (why := pypi_unreachable()):
            pytest.skip(f"PyPI cannot be reached from here ({why}): the install cell's pip fetches the build backend "
                        "(setuptools) from it")
        raise
    project = working / "ntu-ml-lightning"
    check(book, "hw1", project)
    assert printed(install) == [
        f"{dataset} is read-only: copied to {project}, where the project is installed and its runs are kept",
        "Installing the project and its dependencies (pip install -e ., the installed torch kept) ...",
        f"Project folder: {project}"]
    assert printed(book.cells[-1]) == [  # the same copy, installed already (not copied again into itself)
        f"{dataset} is read-only: using its copy {project}, made before (delete that folder to copy it again)",
        f"Project folder: {project}"]
    assert sorted(dataset.rglob("*")) == untouched
    assert subprocess.run([python, "-c", INSTALLED], capture_output=True, text=True, cwd=tmp_path,
                          check=True).stdout.split() == [project.as_uri(), "True", "True"]
    timing = install.metadata.execution
    installed = datetime.fromisoformat(timing["shell.execute_reply"]) - datetime.fromisoformat(
        timing["iopub.execute_input"])
    print(f"hw1 notebook in a kernel without the project: {seconds:.1f} s, its install cell "
          f"{installed.total_seconds():.1f} s")


def test_an_install_that_cannot_reach_pypi_stops_in_one_line(kaggle, tmp_path, monkeypatch):
    """A Kaggle Notebook with its Internet off: pip can fetch neither the build backend nor a missing package. The
    install cell prints pip's own lines, then stops the notebook with one line (no traceback), naming pip's error."""
    python, dataset, working, book = kaggle
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured index, links or constraints: only this index,
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # where nothing listens
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(CellExecutionError):  # nbclient stops at the first cell that raises
        execute(book, working, kernel_name="kaggle")
    (install,) = [c for c in book.cells if c.source.startswith("import importlib.metadata")]
    (error,) = [o for o in install.outputs if o.output_type == "error"]
    project = working / "ntu-ml-lightning"
    assert error.traceback == [
        f"InstallFailed: pip install -e . in {project} failed: ERROR: No matching distribution found for "
        "setuptools>=64 (without the internet nothing can be fetched: on Kaggle, switch the notebook's Internet on)"]
    assert "ERROR: No matching distribution found for setuptools>=64" in "\n".join(printed(install, "stderr"))
    assert [c for c in book.cells if c.get("execution_count")][-1] is install
    assert subprocess.run([python, "-c", INSTALLED], capture_output=True, text=True, cwd=tmp_path,
                          check=True).stdout.split() == ["not", "installed", "False", "True"]


def test_a_repo_url_that_cannot_be_cloned_stops_in_one_line(bare_kernel, tmp_path):
    """REPO_URL naming no repository (a typo; or no internet) where the project is not: git's own lines, then one
    line naming git's error, no traceback; nothing left in the notebook's folder."""
    url = str(tmp_path / "no-such-repository")
    book = with_parameters(nbformat.read(NOTEBOOKS / "hw1.ipynb", as_version=4), {**short_run("hw1"), "REPO_URL": url})
    working = tmp_path / "working"
    working.mkdir()
    with pytest.raises(CellExecutionError):
        execute(book, working, kernel_name="kaggle")
    (install,) = [c for c in book.cells if c.source.startswith("import importlib.metadata")]
    (error,) = [o for o in install.outputs if o.output_type == "error"]
    assert error.traceback == [
        f"InstallFailed: git clone {url} failed: fatal: repository '{url}' does not exist (without the internet "
        "nothing can be fetched: on Kaggle, switch the notebook's Internet on)"]
    assert f"fatal: repository '{url}' does not exist" in printed(install, "stderr")
    assert list(working.iterdir()) == []
