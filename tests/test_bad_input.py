"""Bad input, every homework, one table: each fault a user can make with the data, the options or a checkpoint
must end in ONE `error:` line naming the file and the problem, exit code 2, no traceback and nothing written.

Each homework's demo set (`write_demo`, the real file layout) is written once per module and copied into the
test's folder before a fault is made in it; one tiny checkpoint per homework is trained once, on first use.
Faults the homework test files already check on their own tiny data are listed in COVERED, not repeated here.
"""
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse.typing import import_object

from datamodules.errors import DataError
from datamodules.base import HomeworkDataModule
from datamodules.covid import ML2023, write_demo_covid
from homework import hw1, registry
from tests.conftest import QUIET, user_error

LIMITS = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
          "--torch_num_threads", "1", *QUIET]


@dataclass(frozen=True)
class Homework:
    name: str
    main: Callable
    datamodule: type[HomeworkDataModule]
    tiny: tuple[str, ...]  # its tiny recipe (homework/configs/hwN_tiny.yaml): a step trains in milliseconds


#: Options a homework's own faults below need in its checkpoint (HW2's timit_11 one: windows of 11 frames).
EXTRA = {"hw2": ("--data.concat_nframes", "11")}


def homework(name: str) -> Homework:
    module = registry.module(name)
    return Homework(name, module.main, module.HOMEWORK.datamodule_class, registry.tiny(name) + EXTRA.get(name, ()))


#: every homework of homework/registry.py
HOMEWORKS = {name: homework(name) for name in registry.names()}


class Prepared:
    """Each homework's pristine demo set and tiny trained checkpoint, made once per module on first use."""

    def __init__(self, root: Path) -> None:
        self.root, self._data, self._ckpt = root, {}, {}

    def data(self, hw: str) -> Path:
        if hw not in self._data:
            HOMEWORKS[hw].datamodule.write_demo(self.root / hw / "data")
            self._data[hw] = self.root / hw / "data"
        return self._data[hw]

    def layout(self, hw: str) -> str:
        """The folder of the demo set that holds the files ("." or the one sub-folder the homework finds them in)."""
        data, find = self.data(hw), HOMEWORKS[hw].datamodule.find_layout
        if find(data) is not None:
            return "."
        (folder,) = [d.name for d in sorted(data.iterdir()) if d.is_dir() and find(d) is not None]
        return folder

    def checkpoint(self, hw: str) -> Path:
        if hw not in self._ckpt:
            runs = self.root / hw / "runs"
            cli = HOMEWORKS[hw].main(["fit", "--data.data_dir", str(self.data(hw)), *HOMEWORKS[hw].tiny, *LIMITS,
                                      "--trainer.default_root_dir", str(runs)])
            self._ckpt[hw] = Path(cli.trainer.checkpoint_callback.best_model_path)
        return self._ckpt[hw]

    def files(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if p.is_file() and "runs" in p.parts}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Prepared:
    return Prepared(tmp_path_factory.mktemp("prepared"))


@dataclass
class Case:
    """What a fault gets: the homework, the test's folder and the prepared sets."""

    hw: Homework
    tmp: Path
    prepared: Prepared

    def copy(self) -> Path:
        """A fresh copy of the demo set (with its caches), to break; returns the folder holding its files."""
        shutil.copytree(self.prepared.data(self.hw.name), self.tmp / "data")
        return self.tmp / "data" / self.prepared.layout(self.hw.name)

    def fit(self, data: Path, *flags: str) -> list[str]:
        return ["fit", "--data.data_dir", str(data), *self.hw.tiny, *LIMITS, *flags]

    def ckpt(self, hw: str | None = None) -> Path:
        return self.prepared.checkpoint(hw or self.hw.name)


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


# --- the faults ------------------------------------------------------------------------------------------
# Each takes a Case, breaks something, and returns (command line, fragments the error line must hold).
Fault = Callable[[Case], tuple[list[str], tuple[str, ...]]]


def missing_directory(c: Case):
    where = c.tmp / "nowhere"
    return c.fit(where), (f"{c.hw.name.upper()} data not found: '{where}' does not exist",)


def directory_without_the_files(c: Case):
    (c.tmp / "empty").mkdir()
    (c.tmp / "empty" / "notes.txt").write_text("my data is elsewhere\n")
    return c.fit(c.tmp / "empty"), (f"'{c.tmp / 'empty'}' holds none of the expected files",)


def misspelt_option(c: Case):
    return ["fit", "--data.data_dri", "x"], ("unrecognized option --data.data_dri; did you mean --data.data_dir?",)


def abbreviated_option(c: Case):
    """argparse would take a prefix of one option as that option: a typo that silently sets something."""
    return ["fit", "--data.data_di", "x"], ("unrecognized option --data.data_di; did you mean --data.data_dir?",)


def endless_fit_with_a_schedule_over_the_fit(c: Case):
    """-1 is Lightning's "no limit"; each recipe's warmup + cosine schedule needs the fit's length."""
    return ["fit", "--trainer.max_epochs", "-1", *QUIET], ("--trainer.max_epochs -1 trains without end",
                                                            "give --trainer.max_epochs N or --trainer.max_steps N")


def misspelt_config_key(c: Case):
    config = c.tmp / "mine.yaml"
    config.write_text("trainer:\n  max_epochs: 1\ndata:\n  data_dri: x\n")
    return ["fit", "--config", str(config)], (
        f"unknown key 'data.data_dri' in --config {config}; did you mean 'data.data_dir'?",)


def config_of(text: str | None, *fragments: str) -> Fault:
    """A `--config` file with this text (None: no file at all); the error names it and the problem."""
    def fault(c: Case):
        config = c.tmp / "mine.yaml"
        if text is not None:
            config.write_text(text)
        return ["fit", "--config", str(config)], tuple(f.format(config=config) for f in fragments)
    return fault


def another_homeworks_checkpoint(c: Case):
    other = "hw2" if c.hw.name == "hw1" else "hw1"
    return ["predict", "--ckpt_path", str(c.ckpt(other)), *QUIET], (f"trained by {other}, not {c.hw.name}",
                                                                     f"python -m homework.{other}")


def text_file_as_checkpoint(c: Case):
    (c.tmp / "model.ckpt").write_text("the weights are on my other laptop\n")
    return ["predict", "--ckpt_path", str(c.tmp / "model.ckpt"), *QUIET], (
        f"{c.tmp / 'model.ckpt'}: not a readable checkpoint: not a file torch.save wrote",)


def truncated_checkpoint(c: Case):
    shutil.copy(c.ckpt(), c.tmp / "cut.ckpt")
    truncate(c.tmp / "cut.ckpt")
    return ["predict", "--ckpt_path", str(c.tmp / "cut.ckpt"), *QUIET], (
        f"{c.tmp / 'cut.ckpt'}: not a readable checkpoint: cut short or damaged",)


def weights_only_file_as_checkpoint(c: Case):
    """What the course's sample code saves (`torch.save(model.state_dict(), path)`), or any saved tensor."""
    torch.save({"layers.0.weight": torch.zeros(2, 2)}, c.tmp / "model.ckpt")
    return ["validate", "--ckpt_path", str(c.tmp / "model.ckpt"), *QUIET], (f"{c.tmp / 'model.ckpt'}",
                                                                            "not a checkpoint of this project")


def tensor_file_as_checkpoint(c: Case):
    torch.save(torch.zeros(3, 40), c.tmp / "uttr-0.pt")
    return ["predict", "--ckpt_path", str(c.tmp / "uttr-0.pt"), *QUIET], (f"{c.tmp / 'uttr-0.pt'}",
                                                                          "holds a Tensor, not a checkpoint")


def missing_checkpoint(c: Case):
    return ["predict", "--ckpt_path", str(c.tmp / "best.ckpt"), *QUIET], (f"checkpoint '{c.tmp / 'best.ckpt'}' "
                                                                          f"does not exist",)


def no_epochs(c: Case):
    """It used to make a run directory whose run.json said "finished", with no checkpoint."""
    return ["fit", "--trainer.max_epochs", "0", *QUIET], ("--trainer.max_epochs 0 trains nothing; give at least 1",)


def no_steps(c: Case):
    return ["fit", "--trainer.max_steps", "0", *QUIET], ("--trainer.max_steps 0 trains nothing; give at least 1",)


def gpu_where_there_is_none(c: Case):
    """A command copied from Colab onto a laptop: Lightning's MisconfigurationException, and then an
    AttributeError while cleaning up, left an empty run directory behind."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return c.fit(c.copy(), "--trainer.accelerator", "gpu"), (
        "--trainer.accelerator gpu: No supported gpu backend found! (this machine has no CUDA GPU; leave "
        "--trainer.accelerator at auto",)


def no_devices(c: Case):
    return c.fit(c.copy(), "--trainer.devices", "0"), ("--trainer.devices 0: ", "not a valid input")


# --- one homework's files --------------------------------------------------------------------------------
def hw1_empty_training_file(c: Case):
    train = c.copy() / "covid.train.csv"
    train.write_text(train.read_text().splitlines()[0] + "\n")
    return c.fit(train.parent), (f"{train}: the file has a header but no data rows",)


def hw1_other_layout(c: Case, command: str):
    """The model was trained on ML2022's 116 features; this folder holds ML2023's files."""
    write_demo_covid(c.tmp / "ml2023", ML2023, num_train=50, num_test=20)
    return [command, "--ckpt_path", str(c.ckpt()), "--data.data_dir", str(c.tmp / "ml2023"), *QUIET], (
        str(c.ckpt()), "in_features 116", f"'{c.tmp / 'ml2023'}'", "gives in_features 87")


def hw1_selected_features_of_another_layout(c: Case):
    """As many features as the model takes (the 5 best), but chosen among ML2022's: ML2023 has no day 4 or 5."""
    cli = c.hw.main(c.fit(c.prepared.data("hw1"), "--data.features", "5", "--trainer.default_root_dir",
                          str(c.tmp / "five")))
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    assert any(name.endswith(("_day4", "_day5")) for name in cli.datamodule.transform.names)
    write_demo_covid(c.tmp / "ml2023", ML2023, num_train=50, num_test=20)
    return ["predict", "--ckpt_path", ckpt, "--data.data_dir", str(c.tmp / "ml2023"), *QUIET], (
        f"{c.tmp / 'ml2023'}: the model in {ckpt} was trained on features these ML2023 files do not have",)


def hw2_missing_feature_file(c: Case):
    root = c.copy()
    first = (root / "test_split.txt").read_text().split()[0]
    (root / "feat" / "test" / f"{first}.pt").unlink()
    return c.fit(root.parent), (f"{first}.pt: not found, but test_split.txt lists utterance {first}",)


def hw2_empty_split(c: Case):
    root = c.copy()
    (root / "train_split.txt").write_text("\n")
    return c.fit(root.parent), (f"{root / 'train_split.txt'}: no utterance ids in this file",)


def hw2_truncated_tensor(c: Case):
    root = c.copy()
    first = (root / "train_split.txt").read_text().split()[0]
    truncate(root / "feat" / "train" / f"{first}.pt")
    return c.fit(root.parent), (f"{first}.pt: cannot be read as a saved tensor",)


def hw2_inf_in_features(c: Case):
    root = c.copy()
    first = (root / "train_split.txt").read_text().split()[0]
    path = root / "feat" / "train" / f"{first}.pt"
    features = torch.load(path)
    features[2, 5] = float("inf")
    torch.save(features, path)
    return c.fit(root.parent), (f"{path}: infinite value in frame 2",)


def hw2_pickled_object_as_features(c: Case):
    """A feature file that holds a pandas DataFrame: torch's safe loader refuses it; what it holds is named."""
    import pandas as pd

    root = c.copy()
    first = (root / "train_split.txt").read_text().split()[0]
    path = root / "feat" / "train" / f"{first}.pt"
    torch.save(pd.DataFrame(torch.load(path).numpy()), path)
    return c.fit(root.parent), (f"{path}: holds pickled pandas objects, not a tensor",)


def hw2_other_classes(c: Case, command: str):
    """Trained on libriphone's 41 phonemes; this folder holds ML2021's timit_11 (39 phonemes)."""
    import numpy as np

    root = c.tmp / "timit_11"
    root.mkdir()
    rng = np.random.default_rng(0)
    np.save(root / "train_11.npy", rng.normal(size=(40, 429)).astype(np.float32))
    np.save(root / "train_label_11.npy", rng.integers(0, 39, 40).astype(str))
    np.save(root / "test_11.npy", rng.normal(size=(20, 429)).astype(np.float32))
    return [command, "--ckpt_path", str(c.ckpt()), "--data.data_dir", str(root), *QUIET], (
        str(c.ckpt()), "num_classes 41", f"'{root}'", "gives num_classes 39")


def hw3_missing_split_folder(c: Case):
    root = c.copy()
    shutil.rmtree(root / "validation")
    return c.fit(root), ("ML2022 food-11 layout", "validation/ is missing")


def hw3_empty_split(c: Case):
    root = c.copy()
    for image in (root / "validation").iterdir():
        image.unlink()
    return c.fit(root), (f"{root / 'validation'}: no images",)


def hw3_empty_test_folder(c: Case):
    root = c.copy()
    for image in (root / "test").iterdir():
        image.unlink()
    return c.fit(root), (f"{root / 'test'}: no images",)


def hw3_corrupt_image(c: Case):
    root = c.copy()
    image = sorted((root / "validation").iterdir())[3]
    truncate(image, 0.3)
    return c.fit(root), (f"{image}: cannot decode this image", "--data.bad_images skip")


def hw3_corrupt_test_image(c: Case):
    root = c.copy()
    image = sorted((root / "test").iterdir())[0]
    image.write_bytes(b"GIF89a not really")
    return ["predict", "--ckpt_path", str(c.ckpt()), "--data.data_dir", str(root), *QUIET], (
        f"{image}: cannot decode this image",)


def hw4_missing_json(c: Case):
    root = c.copy()
    (root / "mapping.json").unlink()
    return c.fit(root), (f"{root / 'mapping.json'}: file not found",)


def hw4_truncated_tensor(c: Case):
    root = c.copy()
    first = json.loads((root / "testdata.json").read_text())["utterances"][0]["feature_path"]
    truncate(root / first)
    return c.fit(root), (f"{root / first}: cannot be read as a saved tensor",)


def hw4_numpy_array_of_another_shape(c: Case):
    """A numpy array is read (as a tensor would be), and then checked like one: here it has 3 features, not 40."""
    import numpy as np

    root = c.copy()
    first = json.loads((root / "testdata.json").read_text())["utterances"][0]["feature_path"]
    torch.save(np.zeros((5, 3), dtype=np.float32), root / first)
    return c.fit(root), (f"{root / first}: tensor of shape (5, 3), expected (frames, 40)",)


def hw4_empty_split(c: Case):
    root = c.copy()
    metadata = json.loads((root / "metadata.json").read_text())
    write_json(root / "metadata.json", {**metadata, "speakers": {}})
    return c.fit(root), (f"{root / 'metadata.json'}: no training utterances",)


def write_speakers(root: Path, speakers: dict[str, list]) -> None:
    """metadata.json with these speakers' utterances, and mapping.json numbering them in this order."""
    metadata = json.loads((root / "metadata.json").read_text())
    write_json(root / "metadata.json", {**metadata, "speakers": speakers})
    write_json(root / "mapping.json", {"speaker2id": {s: k for k, s in enumerate(speakers)},
                                       "id2speaker": {str(k): s for k, s in enumerate(speakers)}})


def hw4_other_speakers(c: Case, command: str):
    """Trained on the demo's 30 speakers; this folder's mapping.json has 3."""
    root = c.copy()
    write_speakers(root, dict(list(json.loads((root / "metadata.json").read_text())["speakers"].items())[:3]))
    return [command, "--ckpt_path", str(c.ckpt()), "--data.data_dir", str(root), *QUIET], (
        str(c.ckpt()), "num_speakers 30", f"'{root}'", "gives num_speakers 3")


def hw4_renamed_speakers(c: Case, command: str):
    """As many speakers as in training, but other ones: the class numbers would name the wrong people."""
    root = c.copy()
    speakers = json.loads((root / "metadata.json").read_text())["speakers"]  # in class order, as the demo writes
    write_speakers(root, {f"id9{name[3:]}": utterances for name, utterances in speakers.items()})
    return [command, "--ckpt_path", str(c.ckpt()), "--data.data_dir", str(root), *QUIET], (
        f"{root / 'mapping.json'}: other speakers than the model in {c.ckpt()}",
        "class 0 was 'id10000', here 'id90000'")


def hw5_missing_test_file(c: Case):
    root = c.copy()
    (root / "test.raw.en").unlink()
    return c.fit(root), (f"{root}: test.raw.en not found",)


def hw5_empty_split(c: Case):
    root = c.copy()
    for name in ("train_dev.raw.en", "train_dev.raw.zh"):
        (root / name).write_text("")
    return c.fit(root), (f"{root / 'train_dev.raw.en'}: the file is empty",)


def hw5_vocabulary_the_corpus_cannot_make(c: Case):
    """Unset, the vocabulary fits the corpus (test_where_students_run.py); a size named stays what was asked."""
    return c.fit(c.copy(), "--data.vocab_size", "8000"), ("SentencePiece cannot build a 8000-piece vocabulary",
                                                          "choose another --data.vocab_size")


def hw5_line_counts(c: Case):
    root = c.copy()
    (root / "test.raw.zh").write_text("。\n" * 3)
    return c.fit(root), (f"{root / 'test.raw.en'} has 500 lines but test.raw.zh has 3",)


COMMON: dict[str, Fault] = {
    "missing directory": missing_directory,
    "directory without the files": directory_without_the_files,
    "misspelt option": misspelt_option,
    "abbreviated option": abbreviated_option,
    "misspelt config key": misspelt_config_key,
    "another homework's checkpoint": another_homeworks_checkpoint,
    "text file as checkpoint": text_file_as_checkpoint,
    "truncated checkpoint": truncated_checkpoint,
    "weights-only file as checkpoint": weights_only_file_as_checkpoint,
    "tensor file as checkpoint": tensor_file_as_checkpoint,
    "missing checkpoint": missing_checkpoint,
    "max_epochs 0": no_epochs,
    "max_steps 0": no_steps,
}
#: Faults the shared command finds before any homework's code runs (the config file, the Trainer's machine
#: options): checked once, with HW1.
SHARED: dict[str, Fault] = {
    "missing config": config_of(None, "--config {config}: no such file"),
    "config that is not YAML": config_of("trainer:\n  max_epochs: [1\n", "--config {config}: not valid YAML (",
                                         "at line 3, column 1)"),
    "empty config": config_of("", "--config {config}: an empty file"),
    "config that is a list": config_of("- 1\n- 2\n", "--config {config}: not a mapping of options"),
    "accelerator gpu without a GPU": gpu_where_there_is_none,
    "devices 0": no_devices,
    "tune option without its value": lambda c: (["tune", "--space"], ("error: --space needs a value",)),
    "compare option without its value": lambda c: (["compare", "--optimizers", "--trainer.max_epochs", "1"],
                                                   ("error: --optimizers needs a value",)),
}
SPECIFIC: dict[str, dict[str, Fault]] = {
    "hw1": {**SHARED,
            "empty split (training file)": hw1_empty_training_file,
            "layer of 0 units": lambda c: (c.fit(c.copy(), "--model.hidden_dims", "[8, 0]"), (
                "--model.hidden_dims [8, 0]: every layer needs at least 1 unit",)),
            "checkpoint from another layout (predict)": lambda c: hw1_other_layout(c, "predict"),
            "checkpoint from another layout (validate)": lambda c: hw1_other_layout(c, "validate"),
            "checkpoint with features of another layout": hw1_selected_features_of_another_layout},
    "hw2": {"missing feature file": hw2_missing_feature_file,
            "layers of 0 units": lambda c: (c.fit(c.copy(), "--model.hidden_dim", "0"), (
                "--model.hidden_dim 0 --model.num_layers 1: an LSTM needs at least 1 unit per layer and 1 layer",)),
            "empty split": hw2_empty_split,
            "truncated tensor file": hw2_truncated_tensor,
            "inf in features": hw2_inf_in_features,
            "pickled object as feature file": hw2_pickled_object_as_features,
            "checkpoint with other classes (predict)": lambda c: hw2_other_classes(c, "predict"),
            "checkpoint with other classes (validate)": lambda c: hw2_other_classes(c, "validate")},
    "hw3": {"missing split folder": hw3_missing_split_folder,
            "empty split": hw3_empty_split,
            "empty test folder": hw3_empty_test_folder,
            "corrupt image": hw3_corrupt_image,
            "corrupt test image (predict)": hw3_corrupt_test_image},
    "hw4": {"missing mapping.json": hw4_missing_json,
            "truncated tensor file": hw4_truncated_tensor,
            "empty split": hw4_empty_split,
            "numpy array of another shape as feature file": hw4_numpy_array_of_another_shape,
            "checkpoint with other speakers (predict)": lambda c: hw4_other_speakers(c, "predict"),
            "checkpoint with other speakers (validate)": lambda c: hw4_other_speakers(c, "validate"),
            "checkpoint with renamed speakers (predict)": lambda c: hw4_renamed_speakers(c, "predict")},
    "hw5": {"missing test file": hw5_missing_test_file,
            "empty split": hw5_empty_split,
            "mismatched line counts (test)": hw5_line_counts,
            "vocabulary size the corpus cannot make": hw5_vocabulary_the_corpus_cannot_make},
}
for _hw in HOMEWORKS:  # (a homework without faults of its own has the common ones; its own go in tests/test_hwN.py)
    SPECIFIC.setdefault(_hw, {})
    # a warmup + cosine schedule needs the fit's length; HW5's (inverse square root) has none, so -1 trains until
    # early stopping there, as in Lightning
    _schedule = (yaml.safe_load(registry.config(_hw).read_text())["model"].get("lr_scheduler") or {}
                 ).get("class_path")
    if _schedule and hasattr(import_object(_schedule), "set_total_steps"):  # (the CLI's rule: arguments.py)
        SPECIFIC[_hw]["endless fit"] = endless_fit_with_a_schedule_over_the_fit
#: Faults the homework's own test file already checks through the CLI (one test each, not repeated here).
COVERED = {
    ("hw1", "directory without the files"): "test_hw1.py::test_named_data_dir_without_files_is_an_error_not_a_demo",
    ("hw1", "misspelt option"): "test_cli.py::test_a_misspelt_option_is_one_line_with_the_closest_valid_one",
    ("hw1", "another homework's checkpoint"): "test_cli.py::test_another_homeworks_checkpoint_is_one_line",
    ("hw1", "text file as checkpoint"): "test_hw1.py::test_a_broken_checkpoint_file_is_a_clear_error",
    ("hw5", "missing directory"): "test_hw5.py::test_half_a_training_pair_or_no_files_is_a_clear_error",
}
TABLE = [(hw, name) for hw in HOMEWORKS for name in {**COMMON, **SPECIFIC[hw]} if (hw, name) not in COVERED]


@pytest.mark.parametrize("hw, fault", TABLE, ids=[f"{hw}-{fault}" for hw, fault in TABLE])
def test_bad_input_is_one_line_naming_the_problem(hw, fault, tmp_path, prepared, capsys):
    case = Case(HOMEWORKS[hw], tmp_path, prepared)
    args, fragments = {**COMMON, **SPECIFIC[hw]}[fault](case)
    capsys.readouterr()  # what preparing the demo set and checkpoint printed
    before = prepared.files()
    line = user_error(capsys, case.hw.main, args)
    for fragment in fragments:
        assert fragment in line, line
    assert prepared.files() == before  # no prediction or checkpoint written beside the checkpoint used


# --- a training loss that turns NaN/inf ---------------------------------------------------------------------
#: Epoch 0 trains as usual (and saves its checkpoints); from epoch 1 the learning rate is 1e30 times larger.
EXPLODE_AFTER_EPOCH_0 = ["--trainer.max_epochs", "3", "--model.lr_scheduler", "torch.optim.lr_scheduler.StepLR",
                         "--model.lr_scheduler.step_size", "1", "--model.lr_scheduler.gamma", "1e30"]


@pytest.mark.filterwarnings("ignore:Encountered `nan` values")  # (HW5's epoch mean drops them; the callback does not)
@pytest.mark.parametrize("hw, flags, when", [
    ("hw1", [], "in epoch 1 (by optimizer step"),  # the default whole-epoch manual steps
    ("hw1", ["--data.minibatches_per_step", "1"], "at step"),  # automatic optimization: the exact step
    ("hw2", [], "at step"),
    ("hw5", [], "at step"),
])
def test_a_nan_loss_stops_the_run_keeping_its_earlier_checkpoints(hw, flags, when, tmp_path, prepared, capsys):
    case = Case(HOMEWORKS[hw], tmp_path, prepared)
    args = case.fit(prepared.data(hw), *flags, *EXPLODE_AFTER_EPOCH_0)  # the CLI watches every fit
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        case.hw.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len([e for e in err if e.startswith("error:")]) == 1
    assert err[-1].startswith("error: training stopped: the training loss (train_loss) became "), err[-1]
    assert when in err[-1] and "--trainer.gradient_clip_val" in err[-1] and "smaller learning rate" in err[-1]
    (run,) = Path("runs", hw).iterdir()
    assert f"the checkpoints saved before it are kept in {(run / 'checkpoints').resolve()}" in err[-1]
    assert {torch.load(p, weights_only=True)["epoch"] for p in run.glob("checkpoints/*.ckpt")} == {0}  # none after
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["best_epoch"] == 0


def test_a_nan_loss_before_any_checkpoint_leaves_no_run(capsys):
    with pytest.raises(SystemExit) as exit_info:
        hw1.main(["fit", *LIMITS, "--data.minibatches_per_step", "1", "--model.lr_scheduler", "null",
                  "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "1e30"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2
    assert line.startswith("error: training stopped: the training loss (train_loss) became ")
    assert "at step 2 (epoch 0, batch 1)" in line
    assert "no checkpoint had been saved yet" in line
    assert not list(Path("runs").glob("hw1/*"))  # the run directory is gone


def test_a_data_setting_named_against_the_checkpoint_is_an_error_not_silently_replaced():
    from jsonargparse import Namespace

    from homework.runs.checkpoints import restore_data_settings

    saved = {"datamodule_hyper_parameters": {"concat_nframes": 21, "batch_size": 512, "seed": 0}}
    data = Namespace(concat_nframes=5, batch_size=64, seed=0)
    with pytest.raises(DataError, match=r"--data.concat_nframes 5: the model in x.ckpt was trained with "
                                        r"concat_nframes 21, .* leave --data.concat_nframes out"):
        restore_data_settings(saved, data, ("batch_size",), given={"concat_nframes"}, path="x.ckpt")
    restore_data_settings(saved, data, ("batch_size",), given={"batch_size", "seed"})  # runtime, or the same
    assert (data.concat_nframes, data.batch_size) == (21, 64)  # not named: the checkpoint's


def test_losses_checked_every_n_steps_name_the_first_bad_step_and_stop_before_validation(tmp_path):
    """What an accelerator does (read the losses back every n steps): the step named is the first NaN one, and
    the pending losses are read before validation, so no checkpoint of a NaN model is saved."""
    import pytorch_lightning as pl
    from pytorch_lightning.demos.boring_classes import BoringModel

    from callbacks import NonFiniteLoss, StopOnNonFiniteLoss

    class TurnsNaN(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            return out["loss"] * float("nan") if self.global_step >= 6 else out["loss"]

    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=8, limit_val_batches=1,
                         num_sanity_val_steps=0, callbacks=[StopOnNonFiniteLoss(every_n_steps=5)], logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(NonFiniteLoss, match=r"became nan at step 7 \(epoch 0, batch 6\); no checkpoint"):
        trainer.fit(TurnsNaN())
    assert trainer.global_step == 8  # found at the end of the epoch (steps 6-8 were pending), before validation
    assert not list(tmp_path.rglob("*.ckpt"))
