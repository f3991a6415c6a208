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
    """What differs between the homeworks, read from each homework's own files: the title (the first paragraph
    of homework/hwN.py's docstring), its Kaggle competition and the course's Google-Drive files (its DataModule's)."""
    title = " ".join(ast.get_docstring(ast.parse((HERE.parent / "homework" / f"{hw}.py").read_text()))
                     .split("\n\n")[0].split())
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
PROJECT_DIR = ""    # where the project folder is, when not beside this notebook: e.g. uploaded or unzipped on
                    # Google Drive, "/content/drive/MyDrive/ntu-ml-lightning" (mounted in Colab)
REPO_URL = ""       # or the git URL of your copy of the project, cloned when it is not here
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
    return f'''import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

IN_COLAB = "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules


class OneLine(Exception):
    def _render_traceback_(self):  # IPython shows this one line, not a traceback
        return [f"{{type(self).__name__}}: {{self}}"]


class ProjectNotFound(OneLine):
    pass


class InstallFailed(OneLine):
    pass


def run_tool(command, what):
    """Run `command` (git or pip); when it fails, its last error line as one line, below all it printed."""
    done = subprocess.run(command, capture_output=True, text=True)
    output = re.sub(r"\\x1b\\[[0-9;]*m", "", done.stderr)  # (pip colours its build's lines even when captured)
    sys.stderr.write(output)
    if done.returncode:
        said = re.findall(r"(?:ERROR|fatal): .*", output) or output.strip().splitlines()
        said = said[-1].strip() if said else f"exit status {{done.returncode}}"
        raise InstallFailed(f"{{what}} failed: {{said}} (without the internet nothing can be fetched: on Kaggle, "
                            "switch the notebook's Internet on)")


def project_folder(folder):
    folder = Path(folder).expanduser()
    return folder if (folder / "homework" / "{hw}.py").is_file() and (folder / "setup.cfg").is_file() else None


def installed_folder():
    """The folder of the installed project (pip install -e), None when it is not installed. (The egg-info that
    installing leaves in the project folder, found from there through the path's "", is not an installation.)"""
    for installed in importlib.metadata.distributions(name="ntu-ml-lightning"):
        url = urllib.parse.urlparse(json.loads(installed.read_text("direct_url.json") or "{{}}").get("url", ""))
        if url.scheme == "file" and project_folder(urllib.parse.unquote(url.path)):
            return project_folder(urllib.parse.unquote(url.path))
    return None


if PROJECT_DIR and IN_COLAB and PROJECT_DIR.startswith("/content/drive"):
    from google.colab import drive

    drive.mount("/content/drive")
try:
    STARTED_IN
except NameError:  # the notebook's own folder (Kaggle: /kaggle/working), kept when this cell runs again
    STARTED_IN = Path.cwd()
# the project: PROJECT_DIR, cloned or copied here before, here, one level up (Jupyter opened in notebooks/), on
# the path, installed, or cloned from REPO_URL
beside = STARTED_IN / "ntu-ml-lightning"
spec = importlib.util.find_spec("homework")
places = [PROJECT_DIR] * bool(PROJECT_DIR) + [beside, Path.cwd(), Path.cwd().parent]
places += [Path(spec.origin).parents[1]] if spec is not None and spec.origin else []
found = next(filter(None, map(project_folder, places)), None) or installed_folder()
if found is None and REPO_URL:
    run_tool(["git", "clone", "--quiet", REPO_URL, str(beside)], f"git clone {{REPO_URL}}")
    found = project_folder(beside)
if found is None:
    raise ProjectNotFound(
        "the project is not here: put its folder beside this notebook (uploaded or unzipped), or set PROJECT_DIR "
        "to it (e.g. on Google Drive), or REPO_URL to the git URL of your copy, in the parameters cell")
if not os.access(found, os.W_OK):  # e.g. a Kaggle dataset (/kaggle/input/...): installing and runs need to write
    if project_folder(beside) is None:
        shutil.copytree(found, beside, symlinks=True)
        print(f"{{found}} is read-only: copied to {{beside}}, where the project is installed and its runs are kept")
    else:
        print(f"{{found}} is read-only: using its copy {{beside}}, made before (delete that folder to copy it again)")
    found = beside
os.chdir(found)
# installed as a distribution (not merely importable from this folder), with every dependency; torch as it is
missing = [m for m in ("pytorch_lightning", "jsonargparse", "torchmetrics", "optuna", "sacrebleu")
           if importlib.util.find_spec(m) is None]
if installed_folder() is None or missing:
    keep = Path.home() / ".keep-torch.txt"  # a constraint: pip keeps the torch build already here (Colab's CUDA)
    keep.write_text("".join(f"{{name}}=={{importlib.metadata.version(name)}}\\n" for name in ("torch", "torchvision")
                            if importlib.util.find_spec(name) is not None))
    print("Installing the project and its dependencies (pip install -e ., the installed torch kept) ...")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "-e", ".", "-c", str(keep)]
    run_tool(pip, f"pip install -e . in {{found}}")
    importlib.invalidate_caches()
if str(found) not in sys.path:
    sys.path.insert(0, str(found))  # (an install made now is on the path of new processes only)
from homework import {hw}

print("Project folder:", found)
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


def unpack(folder, downloaded):
    """Unpack the archives in `folder` (a Kaggle download is a zip); remove only those this cell downloaded."""
    for archive in list(folder.glob("*.zip")) + list(folder.glob("*.tgz")) + list(folder.glob("*.tar.gz")):
        print("Unpacking", archive)
        if archive.suffix == ".zip":
            zipfile.ZipFile(archive).extractall(folder)
        else:
            tarfile.open(archive).extractall(folder, filter="data")
        if downloaded:
            archive.unlink()


fetched = None  # how this cell tried to get the data
if Data.locate(target) is None and target.is_dir():
    unpack(target, downloaded=False)  # an archive put there by hand
if Data.locate(target) is not None:
    print("Data found in", target)
elif KAGGLE and {competition!r} and kaggle_token:
    fetched = "the Kaggle CLI"
    target.mkdir(parents=True, exist_ok=True)
    !kaggle competitions download --quiet -c {competition} -p {{target}}
    unpack(target, downloaded=True)
elif GDOWN_FILES:
    fetched = "the Google-Drive files (GDOWN_FILES)"
    target.mkdir(parents=True, exist_ok=True)
    if shutil.which("gdown") is None:
        !pip install --quiet gdown
    for name, file_id in GDOWN_FILES.items():
        !gdown --quiet {{file_id}} -O {{target / name}}
    unpack(target, downloaded=True)
if Data.locate(target) is not None:
    DATA_DIR = str(target)
    if fetched:
        print(f"Data fetched with {{fetched}} into {{target}}")
else:
    DATA_DIR = None
    why = (f"fetching it with {{fetched}} failed (see the lines above)" if fetched else
           "no Kaggle token (KAGGLE) or Google-Drive files (GDOWN_FILES) to fetch it with")
    print(f"No {hw.upper()} data in {{target}}: {{why}}. `fit` trains on the generated demo data; for the real "
          f"data: {{Data.download_hint()}} into {{target}}.")
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


def predict(hw: str, source: str) -> str:
    return f'''prediction = {hw}.predict(ckpt_path={source}, **WHERE)
print("Submission file:", prediction.submission)
'''


def submit(hw: str) -> str:
    competition = HOMEWORKS[hw]["competition"]
    where = (f"Upload {{prediction.submission}} on https://www.kaggle.com/competitions/{competition}/submissions, "
             f"or run: !kaggle competitions submit -c {competition} -f {{prediction.submission}} -m 'my submission'"
             if competition
             else f"{hw.upper()} is not graded on Kaggle: hand in {{prediction.submission}} as the course asks")
    return f'''if DATA_DIR is None:
    print("Trained on the generated demo data: nothing to submit (its scores mean nothing on Kaggle)")
else:
    print(f"{where}")
    if IN_COLAB:
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
        new_markdown_cell("## 1. The GPU\n\nThe precision follows the GPU: 16-mixed (fp16 with a gradient scaler) "
                          "on a T4, V100 or P100, bf16-mixed on an A100, L4 or H100, 32-true on the CPU; the fit's "
                          "first line says which and why. With Kaggle's two T4s a fit takes one, unless "
                          "`--trainer.devices 2` asks for both (`docs/gpus.md`)."),
        new_code_cell(gpu()),
        new_markdown_cell("## 2. The project\n\nFound beside this notebook, at `PROJECT_DIR` (e.g. uploaded to "
                          "Google Drive, or a Kaggle dataset: read-only, so it is copied beside the notebook), "
                          "installed already, or cloned from `REPO_URL`; installed with `pip install -e .` when it "
                          "is not, keeping the torch already installed."),
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
                          f"`!python homework/{hw}.py fit --help`.\n\nOr, instead of the command below, the same "
                          f"fit from Python: `result = {hw}.fit(FIT)` takes the options as keyword arguments or a "
                          "dict (`{'trainer.max_epochs': 3}`) and returns a `Result` (the run directory, the best "
                          "score and checkpoint); a mistake raises `HomeworkError` in one line."),
        new_code_cell(options()),
        new_code_cell(fit(hw)),
        new_markdown_cell("## 6. The learning curve and the diagnosis\n\nTraining against validation loss, the "
                          "metric and the learning rate per epoch; the advisor's diagnosis (model bias, "
                          "optimization, overfitting) with the flags to try next."),
        new_code_cell(look(hw)),
    ]
    source = "run"
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
