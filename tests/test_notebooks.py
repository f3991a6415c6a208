"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient + ipykernel), on the demo data.

The parameters cell (tagged `parameters`) is replaced, as papermill does, by a short run with each homework's
smallest model (its tiny recipe, homework/configs/hwN_tiny.yaml); every other cell runs as a student runs it,
`!python homework/hwN.py fit` included. Checked: every code cell ran without an error, the submission file is
in the run's directory, the fit printed its last lines (Run directory, Next), and no output holds a redrawn line
(`\\r`) or an ANSI code (`\\x1b[`). (IPython runs `!` commands on a pseudo-terminal, which ends every line with
`\\r\\n`: that is a newline, and is read as one.) Colab-only cells skip themselves outside Colab.

Every notebook is in the default run, as CI runs it (each is ~15 s of imports in the kernel and in `!python`,
then seconds of work). W&B is off here as in most tests (test_api.py checks a call with W&B offline leaves nothing
behind; offline, W&B prints nothing of its own in a notebook, which running these with W&B on shows).
"""
import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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
    """Execute notebooks/<homework>.ipynb in a fresh kernel started in `tmp_path`; runs and data go there too."""
    monkeypatch.setenv("NTU_ML_HOME", str(tmp_path))  # (absolute: the notebook moves to the project folder)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::DeprecationWarning")
    book = with_parameters(nbformat.read(NOTEBOOKS / f"{homework}.ipynb", as_version=4), short_run(homework))
    before = project_files()
    started = time.perf_counter()
    NotebookClient(book, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - started
    assert project_files() == before  # the notebook ran in the project folder, and wrote nothing there
    return book, seconds


def project_files() -> set[Path]:
    """The project folder's entries, and those of its runs/ and data/ folders if it has them."""
    return {*ROOT.iterdir(), *(p for folder in ("runs", "data") if (ROOT / folder).is_dir()
                                for p in (ROOT / folder).rglob("*"))}


def check(book: nbformat.NotebookNode, homework: str, tmp_path: Path) -> None:
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    for index, text in outputs(book):
        plain = text.replace("\r\n", "\n")
        assert "\r" not in plain, f"cell {index} redraws a line: {plain[max(0, plain.find(chr(13)) - 200):][:400]!r}"
        assert "\x1b[" not in plain, f"cell {index} holds an ANSI code: {plain[:400]!r}"
    filename = registry.module(homework).HOMEWORK.datamodule_class.submission_filename
    (submission,) = (tmp_path / "runs" / homework).glob(f"*/{filename}")
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
