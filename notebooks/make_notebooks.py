"""Writes notebooks/hwN.ipynb, one notebook per homework of homework/registry.py from the same cells, without outputs.

    python notebooks/make_notebooks.py          # after changing a cell here; commit the notebooks with it

A student opens one in Colab (or Jupyter) and runs it top to bottom: check the GPU, install the project, keep runs
on Google Drive (optional), get the data (Kaggle CLI, the course's Google-Drive files, or the demo data), train,
read the learning curve and the diagnosis, predict, find the submission. The first code cell holds the parameters
(tagged `parameters`, as papermill expects): tests/test_notebooks.py replaces it to run each notebook in seconds.
"""
import ast
import json
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # (run as a script from a clone: the project's own packages)

from homework import registry  # noqa: E402


def spec(hw: str) -> dict:
    """What differs between the homeworks, read from each homework's own files: the title (the first line of
    homework/hwN.py's docstring), its Kaggle competition and the course's Google-Drive files (its DataModule's)."""
    title = ast.get_docstring(ast.parse((HERE.parent / "homework" / f"{hw}.py").read_text())).splitlines()[0]
    data = registry.module(hw).HOMEWORK.datamodule_class
    return {"title": title.rstrip("."), "competition": data.kaggle_competition, "gdown": dict(data.course_files),
            "submission": data.submission_filename}


#: every homework the registry finds (homework/registry.py), in course order
HOMEWORKS = {hw: spec(hw) for hw in registry.names()}


def parameters(hw: str) -> str:
    spec = HOMEWORKS[hw]
    gdown = json.dumps(spec["gdown"], indent=4).replace("\n}", ",\n}") if spec["gdown"] else "{}"
    return f'''# Parameters (the tests run this notebook with their own values in this cell)
EPOCHS = None       # None: the recipe's own length (early stopping ends it); e.g. 5 for a short run
MAX_STEPS = None    # e.g. 20: a quick check that everything runs, before a long fit
DATA_DIR = None     # None: data/{hw} in the project (the generated demo data until the course's files are there)
RUNS_DIR = None     # None: runs/{hw} in the project; with USE_DRIVE in Colab: a folder on your Google Drive
USE_DRIVE = False   # Colab: keep the runs on Google Drive, so a lost session continues with `fit --resume`
KAGGLE = True       # download the data with the Kaggle CLI when your token is there (~/.kaggle/kaggle.json)
GDOWN_FILES = {gdown}  # or the course's Google-Drive files: {{file name: file id}}
OPTIONS = {{}}        # any other option of `fit`, e.g. {{"model.optimizer.lr": 3e-4}}
REPO_URL = ""       # Colab: the git URL of this project, cloned when it is not installed yet
'''


def gpu() -> str:
    return '''import shutil

if shutil.which("nvidia-smi"):
    !nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
else:
    print("No NVIDIA GPU here: training runs on the CPU (fine for the demo data; in Colab: Runtime > "
          "Change runtime type > GPU)")
'''


def install(hw: str) -> str:
    return f'''import importlib.util
import os
import sys
from pathlib import Path

IN_COLAB = "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules
# the project folder: here, one level up (Jupyter opened in notebooks/), or where it is installed from
for folder in (Path.cwd(), Path.cwd().parent):
    if (folder / "homework" / "{hw}.py").is_file():
        os.chdir(folder)
        break
else:
    spec = importlib.util.find_spec("homework")
    if spec is not None and (Path(spec.origin).parents[1] / "setup.cfg").is_file():
        os.chdir(Path(spec.origin).parents[1])
    elif REPO_URL:
        !git clone --quiet {{REPO_URL}} ntu-ml-lightning
        os.chdir("ntu-ml-lightning")
    else:
        raise RuntimeError("The project is not here: set REPO_URL in the parameters cell to clone it")
if importlib.util.find_spec("pytorch_lightning") is None or importlib.util.find_spec("homework") is None:
    !pip install --quiet -e .
    sys.path.insert(0, os.getcwd())
from homework import {hw}

print("Project folder:", os.getcwd())
'''


def drive(hw: str) -> str:
    return f'''if USE_DRIVE and IN_COLAB:
    from google.colab import drive

    drive.mount("/content/drive")
    RUNS_DIR = RUNS_DIR or "/content/drive/MyDrive/ntu-ml/runs/{hw}"
    print("Runs are kept in", RUNS_DIR)
elif USE_DRIVE:
    print("USE_DRIVE: Google Drive is mounted only in Colab; the runs stay in", RUNS_DIR or "runs/{hw}")
'''


def data(hw: str) -> str:
    competition = HOMEWORKS[hw]["competition"]
    return f'''import subprocess
import tarfile
import zipfile

Data = {hw}.HOMEWORK.datamodule_class
target = Path(DATA_DIR) if DATA_DIR else Data.default_dir()
if IN_COLAB and KAGGLE and not (Path.home() / ".kaggle" / "kaggle.json").is_file():
    try:  # Colab's secrets (the key icon): KAGGLE_USERNAME and KAGGLE_KEY
        from google.colab import userdata

        os.environ.update(KAGGLE_USERNAME=userdata.get("KAGGLE_USERNAME"), KAGGLE_KEY=userdata.get("KAGGLE_KEY"))
    except Exception as err:  # no such secret, or access not granted
        print("No Kaggle token in Colab's secrets:", err)
kaggle_token = (Path.home() / ".kaggle" / "kaggle.json").is_file() or "KAGGLE_KEY" in os.environ


def unpack(folder):
    for archive in list(folder.glob("*.zip")) + list(folder.glob("*.tgz")) + list(folder.glob("*.tar.gz")):
        print("Unpacking", archive)
        if archive.suffix == ".zip":
            zipfile.ZipFile(archive).extractall(folder)
        else:
            tarfile.open(archive).extractall(folder, filter="data")
        archive.unlink()


if Data.locate(target) is not None:
    print("Data found in", target)
elif KAGGLE and {competition!r} and kaggle_token:
    target.mkdir(parents=True, exist_ok=True)
    !kaggle competitions download --quiet -c {competition} -p {{target}}
    unpack(target)
elif GDOWN_FILES:
    target.mkdir(parents=True, exist_ok=True)
    if shutil.which("gdown") is None:
        !pip install --quiet gdown
    for name, file_id in GDOWN_FILES.items():
        !gdown --quiet {{file_id}} -O {{target / name}}
    unpack(target)
if Data.locate(target) is not None:
    DATA_DIR = str(target)
else:
    DATA_DIR = None
    print(f"No {hw.upper()} data in {{target}} (and no Kaggle token or Google-Drive files to fetch it): "
          f"`fit` trains on the generated demo data. {{Data.download_hint()}} into {{target}}.")
'''


def options() -> str:
    return '''import shlex

from homework.cli.api import flags

# the options of every command below: where the runs are; `fit` also gets the length and the data
WHERE = {"trainer.default_root_dir": RUNS_DIR} if RUNS_DIR else {}
FIT = {**OPTIONS, **WHERE}
FIT.update({"trainer.max_epochs": EPOCHS} if EPOCHS else {})
FIT.update({"trainer.max_steps": MAX_STEPS} if MAX_STEPS else {})
FIT.update({"data.data_dir": DATA_DIR} if DATA_DIR else {})
ARGS = shlex.join(flags(FIT))
print("fit options:", ARGS or "(the recipe's defaults)")
'''


def fit(hw: str) -> str:
    return f'''!python homework/{hw}.py fit {{ARGS}}
'''


def look(hw: str) -> str:
    return f'''run = {hw}.diagnose(**WHERE)  # the newest fit: its diagnosis, then its learning curve
run.show()
'''


def api_fit(hw: str) -> str:
    return f'''result = {hw}.fit(FIT)  # the same fit from Python; the learning curve is shown at the end
result
'''


def predict(hw: str, source: str) -> str:
    return f'''prediction = {hw}.predict(ckpt_path={source}, **WHERE)
print("Submission file:", prediction.submission)
'''


def submit(hw: str) -> str:
    competition = HOMEWORKS[hw]["competition"]
    where = (f"Upload it on https://www.kaggle.com/competitions/{competition}/submissions, or with "
             f"`!kaggle competitions submit -c {competition} -f <file> -m 'my submission'`" if competition else
             f"{hw.upper()} is not graded on Kaggle: hand in {HOMEWORKS[hw]['submission']} as the course asks")
    return f'''print("{where}")
if IN_COLAB and DATA_DIR:
    from google.colab import files

    files.download(str(prediction.submission))
'''


def notebook(hw: str) -> nbformat.NotebookNode:
    spec = HOMEWORKS[hw]
    cells = [
        new_markdown_cell(
            f"# {spec['title']}\n\n"
            f"Run the cells top to bottom (in Colab: Runtime > Run all). The parameters come first; everything "
            f"else is the project's commands, as `!python homework/{hw}.py ...` or from Python (`{hw}.fit(...)`, "
            f"which takes the same options). Without the course's data it trains on generated demo data, so the "
            f"notebook always runs through. The manual: `docs/notebooks.md` and `docs/{hw}.md`."),
        new_code_cell(parameters(hw), metadata={"tags": ["parameters"]}),
        new_markdown_cell("## 1. The GPU\n\nMixed precision (bf16 or fp16) is used on a GPU automatically."),
        new_code_cell(gpu()),
        new_markdown_cell("## 2. The project\n\nFound here, or cloned and installed (Colab)."),
        new_code_cell(install(hw)),
        new_markdown_cell("## 3. Google Drive (Colab, optional)\n\nWith `USE_DRIVE`, the runs (checkpoints, "
                          "curves, submissions) live on your Drive: after a disconnect, rerun the cells above and "
                          f"continue the newest run with `!python homework/{hw}.py fit --resume` (add "
                          "`--trainer.default_root_dir` with your `RUNS_DIR`)."),
        new_code_cell(drive(hw)),
        new_markdown_cell("## 4. The data\n\nAlready in the data folder, or downloaded with the Kaggle CLI (your "
                          "token: `~/.kaggle/kaggle.json`, or the Colab secrets `KAGGLE_USERNAME` and "
                          "`KAGGLE_KEY`), or the course's Google-Drive files with `gdown`. Without them, the "
                          "generated demo data (its scores mean nothing on Kaggle)."),
        new_code_cell(data(hw)),
        new_markdown_cell("## 5. Train\n\nOne line per epoch; the last lines are the diagnosis, the best score, "
                          "the run directory and the next command. Every option: "
                          f"`!python homework/{hw}.py fit --help`."),
        new_code_cell(options()),
        new_code_cell(fit(hw)),
        new_markdown_cell("## 6. The learning curve and the diagnosis\n\nTraining against validation loss, the "
                          "metric and the learning rate per epoch; the advisor's diagnosis (model bias, "
                          "optimization, overfitting) with the flags to try next."),
        new_code_cell(look(hw)),
    ]
    source = "run"
    if hw == "hw1":
        cells += [new_markdown_cell("## 6b. The same from Python\n\n`hw1.fit(...)` takes the options as keyword "
                                    "arguments or a dict (`{'trainer.max_epochs': 3}`) and returns a `Result`: "
                                    "the run directory, the best score and checkpoint. A mistake raises "
                                    "`HomeworkError` with a one-line message."),
                  new_code_cell(api_fit(hw))]
        source = "result"
    cells += [
        new_markdown_cell("## 7. Predict\n\nWith the best checkpoint of the run above; the file is written into "
                          "that run's directory."),
        new_code_cell(predict(hw, source)),
        new_markdown_cell("## 8. Submit"),
        new_code_cell(submit(hw)),
    ]
    for number, cell in enumerate(cells):
        cell.id = f"{hw}-{number:02d}"  # stable ids: regenerating an unchanged notebook changes no byte
    book = new_notebook(cells=cells)
    book.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}, "accelerator": "GPU",
                     "colab": {"provenance": [], "gpuType": "T4"}}
    return book


def main() -> None:
    for hw in HOMEWORKS:
        book = notebook(hw)
        nbformat.validate(book)
        path = HERE / f"{hw}.ipynb"
        path.write_text(nbformat.writes(book) + "\n", encoding="utf-8")
        print("wrote", path.relative_to(HERE.parent), file=sys.stderr)


if __name__ == "__main__":
    main()
