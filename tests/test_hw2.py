"""HW2 on tiny generated files: both layouts, windows against the sample code's `shift`, the split
by utterance, the packed cache, every bad input as one line, Id order and a fit + predict round trip."""
import logging
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from callbacks import validate_submission
from datamodules.errors import DataError
from datamodules.libriphone import (ML2021, ML2022, ML2023, LibriPhoneDataModule, sample_split,
                                    write_demo_libriphone)
from datamodules.packed import PackedTensors, frame_windows, pack_tensors, require_frames
from homework.hw2 import main
from benchmarks.hw2_memory import concat_feat  # the course sample's own code, verbatim
from tests.conftest import QUIET, user_error

TRAIN_LENGTHS = (5, 1, 12, 3, 8, 2, 9, 4, 7, 6)  # some shorter than the windows tested
TEST_LENGTHS = (3, 1, 6, 2)
TINY = ["--model.hidden_dim", "8", "--model.num_layers", "1", "--data.batch_size", "16",
        "--trainer.max_epochs", "1", "--torch_num_threads", "1", *QUIET]



def make_libriphone(parent: Path, train_lengths=TRAIN_LENGTHS, test_lengths=TEST_LENGTHS, seed: int = 0) -> Path:
    """A libriphone set in the ML2022 layout under `parent/libriphone`; test ids listed out of name order.

    Test utterance k's frame t has feature 0 equal to 100 k + t, so a test can follow the order.
    """
    root = parent / "libriphone"
    generator = torch.Generator().manual_seed(seed)
    for split in ("train", "test"):
        (root / "feat" / split).mkdir(parents=True, exist_ok=True)
    train_ids = [f"{19 + k}-198-{k:04d}" for k in range(len(train_lengths))]
    lines = []
    for utterance, length in zip(train_ids, train_lengths):
        torch.save(torch.randn(length, 39, generator=generator), root / "feat" / "train" / f"{utterance}.pt")
        labels = torch.randint(0, 41, (length,), generator=generator).tolist()
        lines.append(" ".join([utterance, *map(str, labels)]))
    test_ids = [f"{900 - k}-77-{k:04d}" for k in range(len(test_lengths))]  # names sort in reverse
    for k, (utterance, length) in enumerate(zip(test_ids, test_lengths)):
        features = torch.randn(length, 39, generator=generator)
        features[:, 0] = 100 * k + torch.arange(length)
        torch.save(features, root / "feat" / "test" / f"{utterance}.pt")
    (root / "train_split.txt").write_text("\n".join(train_ids) + "\n")
    (root / "test_split.txt").write_text("\n".join(test_ids) + "\n")
    (root / "train_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def make_timit(parent: Path, rows: int = 40, seed: int = 0) -> Path:
    root = parent / "timit_11"
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.save(root / "train_11.npy", rng.normal(size=(rows, 429)).astype(np.float32))
    np.save(root / "train_label_11.npy", rng.integers(0, 39, rows).astype(str))
    np.save(root / "test_11.npy", rng.normal(size=(rows // 2, 429)).astype(np.float32))
    return root


def datamodule(data_dir: Path, **kwargs) -> LibriPhoneDataModule:
    return LibriPhoneDataModule(str(data_dir), **{"batch_size": 16, **kwargs})


# --- the sample code's windows (ML2022 HW2, in benchmarks/hw2_memory.py) are the reference ------------
def edge_repeat(x, concat_n):
    """What `shift` means for an utterance shorter than half a window (where the sample code itself
    fails): every position past an edge repeats the edge frame."""
    mid, length = concat_n // 2, len(x)
    return torch.stack([torch.cat([x[min(max(t + j - mid, 0), length - 1)] for j in range(concat_n)])
                        for t in range(length)])


# --- finding the data -----------------------------------------------------------------------------
def test_libriphone_is_found_from_its_folder_or_the_parent(tmp_path):
    root = make_libriphone(tmp_path / "kaggle")
    for given in (root, tmp_path / "kaggle"):
        files = LibriPhoneDataModule.locate(given)
        assert files.layout == ML2022 and files.root == root
    dm = datamodule(tmp_path / "kaggle")
    dm.setup("fit")
    assert (dm.kaggle_competition, dm.num_classes, dm.concat_nframes) == ("ml2022spring-hw2", 41, 21)
    assert len(dm.train_rows) + len(dm.val_rows) == sum(TRAIN_LENGTHS)
    labels = {line.split()[0]: [int(v) for v in line.split()[1:]]
              for line in (root / "train_labels.txt").read_text().splitlines()}
    assert dm.val_y.tolist() == [v for u in dm.val_ids for v in labels[u]]


def test_ml2023_is_told_apart_by_its_split_size(tmp_path):
    root = make_libriphone(tmp_path)
    (root / "train_split.txt").write_text("\n".join(f"1-1-{k:04d}" for k in range(3429)))
    assert LibriPhoneDataModule.locate(tmp_path).layout == ML2023
    assert (ML2023.kaggle_competition, ML2023.val_ratio, ML2023.seed) == ("ml2023spring-hw2", 0.25, 1213)


def test_timit_11_rows_are_windows_of_11_frames(tmp_path):
    root = make_timit(tmp_path)
    dm = datamodule(tmp_path, concat_nframes=5)
    assert dm.layout == ML2021 and (dm.kaggle_competition, dm.num_classes) == ("ml2021spring-hw2", 39)
    dm.setup("fit")
    stored = torch.from_numpy(np.load(root / "train_11.npy")).view(40, 11, 39)
    (x, y), = [dm.gather(b) for b in dm.val_dataloader()]
    assert torch.equal(x, stored[32:, 3:8])  # the ML2021 sample's split: the last 20% of the rows
    assert y.tolist() == np.load(root / "train_label_11.npy").astype(int)[32:].tolist()
    assert LibriPhoneDataModule(str(tmp_path)).concat_nframes == 11  # all of them by default
    with pytest.raises(DataError, match="timit_11 files hold windows of 11 frames"):
        datamodule(tmp_path, concat_nframes=21)
    main(["fit", "--data.data_dir", str(tmp_path), *TINY, "--model.net", "mlp", "--data.concat_nframes", "3"])
    main(["predict", "--ckpt_path", "best", "--data.data_dir", str(tmp_path), *QUIET])
    frame = pd.read_csv(next(Path("runs/hw2").glob("*/prediction.csv")))
    validate_submission(frame, ["Id", "Class"], 20)
    assert frame.Class.between(0, 38).all()


# --- windows --------------------------------------------------------------------------------------
@pytest.mark.parametrize("concat_nframes", [1, 3, 5, 11, 21])
def test_windows_equal_the_sample_codes_shift_concatenation(concat_nframes, tmp_path):
    root = make_libriphone(tmp_path)
    dm = datamodule(tmp_path, concat_nframes=concat_nframes)
    dm.setup("fit")
    ids = (root / "train_split.txt").read_text().split()
    # the cache holds float16: the reference gets the same rounded features
    features = [torch.load(root / "feat" / "train" / f"{u}.pt").half().float() for u in ids]
    expected = torch.cat([concat_feat(f, concat_nframes) if len(f) >= concat_nframes // 2
                          else edge_repeat(f, concat_nframes) for f in features])
    windows = dm.train_source.windows(torch.arange(len(expected)))
    assert windows.shape == (len(expected), concat_nframes, 39) and windows.dtype == torch.float32
    assert torch.equal(windows.flatten(1), expected)
    # a batch of the training loader: its windows are those of its frame indices
    rows, labels = next(iter(dm.train_dataloader()))
    x, y = dm.gather((rows, labels))
    assert torch.equal(x.flatten(1), expected[rows]) and torch.equal(y, labels)


def test_frame_windows_clamp_to_each_utterances_bounds():
    data = torch.arange(10.0)[:, None]  # rows 0-9: utterances [0, 4) and [4, 10)
    rows, starts, ends = torch.tensor([0, 3, 4, 9]), torch.tensor([0, 0, 4, 4]), torch.tensor([4, 4, 10, 10])
    windows = frame_windows(data, rows, starts, ends, 5)[..., 0]
    assert windows.tolist() == [[0, 0, 0, 1, 2], [1, 2, 3, 3, 3], [4, 4, 4, 5, 6], [7, 8, 9, 9, 9]]


# --- split ----------------------------------------------------------------------------------------
def test_validation_split_is_by_utterance_as_the_sample_draws_it(tmp_path):
    root = make_libriphone(tmp_path)
    ids = (root / "train_split.txt").read_text().split()
    dm = datamodule(tmp_path)
    dm.setup("fit")
    reference = list(ids)  # the sample: random.seed(1337); random.shuffle(usage_list); first 80% train
    random.seed(1337)
    random.shuffle(reference)
    assert set(dm.train_ids) == set(reference[:8]) and set(dm.val_ids) == set(reference[8:])
    offsets = np.cumsum([0, *TRAIN_LENGTHS])
    val_rows = [r for u in dm.val_ids for r in range(offsets[ids.index(u)], offsets[ids.index(u) + 1])]
    assert dm.val_rows.tolist() == val_rows  # whole utterances, none shared with training
    assert set(dm.train_rows.tolist()).isdisjoint(val_rows) and len(dm.train_rows) + len(val_rows) == offsets[-1]
    again, other = datamodule(tmp_path), datamodule(tmp_path, seed=7, val_ratio=0.5)
    again.setup("fit")
    other.setup("fit")
    assert again.val_ids == dm.val_ids and other.val_ids != dm.val_ids and len(other.val_ids) == 5
    with pytest.raises(DataError, match="val_ratio must be between 0 and 1"):
        sample_split(10, 1.5, 0)


# --- the packed cache -----------------------------------------------------------------------------
def test_cache_is_reused_and_repacked_when_a_file_changes(tmp_path, caplog):
    root = make_libriphone(tmp_path)
    files = [root / "feat" / "train" / f"{u}.pt" for u in (root / "train_split.txt").read_text().split()]
    packed = pack_tensors(files, tmp_path / "cache", "train", root, require_frames(39))
    (first,) = (tmp_path / "cache").glob("train-*")
    assert packed.data.dtype == torch.float16 and packed.lengths.tolist() == list(TRAIN_LENGTHS)
    assert torch.equal(packed[2], torch.load(files[2]).half())
    assert len(pickle.dumps(packed)) < 2000  # a DataLoader worker re-opens the file, not a copy of it
    stamp = (first / "data.bin").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = pack_tensors(files, tmp_path / "cache", "train", root, require_frames(39))
    assert "Using the packed train features" in caplog.text and (first / "data.bin").stat().st_mtime_ns == stamp
    assert torch.equal(again.data, packed.data)
    torch.save(torch.zeros(4, 39), files[2])  # a changed file: packed again, the stale cache removed
    changed = pack_tensors(files, tmp_path / "cache", "train", root, require_frames(39))
    (second,) = (tmp_path / "cache").glob("train-*")
    assert second != first and changed.lengths[2] == 4 and not changed[2].any()
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def test_an_unwritable_cache_dir_is_a_clear_error(tmp_path):
    make_libriphone(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError, match="cannot write the feature cache in .*--data.cache_dir"):
        datamodule(tmp_path, cache_dir=str(tmp_path / "file" / "cache")).setup("fit")


def test_packed_tensors_reopen_from_disk(tmp_path):
    root = make_libriphone(tmp_path)
    files = sorted((root / "feat" / "test").glob("*.pt"))
    packed = pack_tensors(files, tmp_path / "c", "test", root, require_frames(39))
    reopened = PackedTensors(packed.directory)
    assert len(reopened) == len(files) and torch.equal(reopened.data, packed.data)


# --- bad input: one line each, before anything is written ------------------------------------------
def corrupt(root: Path, what: str) -> str:
    """Break the set in one way; return the text the error must hold."""
    labels = root / "train_labels.txt"
    first = (root / "train_split.txt").read_text().split()[0]
    if what == "missing file":
        (root / "test_split.txt").unlink()
        return "test_split.txt is missing"
    if what == "no feature file":
        (root / "feat" / "train" / f"{first}.pt").unlink()
        return f"{first}.pt: not found, but train_split.txt lists utterance {first}"
    if what == "wrong shape":
        torch.save(torch.zeros(5, 40), root / "feat" / "train" / f"{first}.pt")
        return rf"{first}.pt: tensor of shape \(5, 40\), expected \(frames, 39\)"
    if what == "label count":
        lines = labels.read_text().splitlines()
        lines[0] += " 3"
        labels.write_text("\n".join(lines))
        return f"utterance {first} has 6 labels but its features have 5 frames"
    if what == "label range":
        labels.write_text(labels.read_text().replace(f"{first} ", f"{first} 41 ", 1))
        return "label 41 is outside 0..40"
    if what == "nan":
        features = torch.zeros(5, 39)
        features[3, 7] = float("nan")
        torch.save(features, root / "feat" / "test" / f"{(root / 'test_split.txt').read_text().split()[1]}.pt")
        return "NaN in frame 3"
    if what == "not a tensor file":
        (root / "feat" / "train" / f"{first}.pt").write_bytes(b"garbage")
        return f"{first}.pt: cannot be read as a saved tensor"
    raise ValueError(what)


@pytest.mark.parametrize("what", ["missing file", "no feature file", "wrong shape", "label count", "label range",
                                  "nan", "not a tensor file"])
def test_bad_input_is_one_line_naming_the_problem_and_nothing_is_written(what, tmp_path, capsys):
    root = make_libriphone(tmp_path / "data")
    expected = corrupt(root, what)
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(tmp_path / "data"), *TINY])
    assert re.search(expected, line), line


@pytest.mark.parametrize("value", ["4", "0", "-3"])
def test_concat_nframes_must_be_positive_and_odd(value, tmp_path, capsys):
    make_libriphone(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.data_dir", str(tmp_path), "--data.concat_nframes", value, *TINY])
    assert exit_info.value.code == 2
    assert "--data.concat_nframes must be a positive odd number" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # found before the demo set would be written
        main(["fit", "--data.concat_nframes", value, *TINY])
    assert not Path("data").exists()


# --- Kaggle export --------------------------------------------------------------------------------
def test_test_frames_follow_test_split_order_and_ids_count_frames(tmp_path):
    make_libriphone(tmp_path)
    dm = datamodule(tmp_path, concat_nframes=3)
    dm.setup("predict")
    centres = torch.cat([dm.gather(b)[0][:, 1, 0] for b in dm.predict_dataloader()])
    expected = [100 * k + t for k, length in enumerate(TEST_LENGTHS) for t in range(length)]
    assert centres.tolist() == expected  # utterances in test_split.txt order, frames in time order
    labels = torch.arange(dm.num_test_samples) % 41
    frame = dm.to_submission(torch.nn.functional.one_hot(labels, 41).float())  # predict returns probabilities
    validate_submission(frame, ["Id", "Class"], sum(TEST_LENGTHS))
    assert frame.Class.tolist() == labels.tolist()
    assert frame.Id.tolist() == list(range(sum(TEST_LENGTHS))) and dm.submission_filename == "prediction.csv"


# --- the whole workflow ---------------------------------------------------------------------------
@pytest.mark.parametrize("recipe, net, nframes", [("hw2.yaml", "lstm", 21), ("hw2_sample.yaml", "mlp", 1)])
def test_every_shipped_recipe_trains_a_batch(recipe, net, nframes, tmp_path):
    make_libriphone(tmp_path)
    config = Path(__file__).resolve().parents[1] / "homework" / "configs" / recipe
    cli = main(["fit", "--config", str(config), "--data.data_dir", str(tmp_path), "--data.batch_size", "8",
                "--trainer.fast_dev_run", "1", *QUIET])
    assert (cli.model.hparams.net, cli.model.hparams.concat_nframes) == (net, nframes)


def test_fit_then_predict_writes_a_valid_submission(tmp_path):
    make_libriphone(tmp_path / "data")
    data = ["--data.data_dir", str(tmp_path / "data")]
    cli = main(["fit", *data, *TINY, "--data.concat_nframes", "5", "--model.net", "gru"])
    assert cli.trainer.checkpoint_callback.monitor == "val_acc" and cli.trainer.checkpoint_callback.mode == "max"
    predicted = main(["predict", "--ckpt_path", "best", *data, *QUIET])
    assert predicted.datamodule.concat_nframes == 5 and predicted.model.hparams.net == "gru"  # from the checkpoint
    (written,) = Path("runs/hw2").glob("*/prediction.csv")
    frame = pd.read_csv(written)
    validate_submission(frame, ["Id", "Class"], sum(TEST_LENGTHS))
    assert frame.Class.between(0, 40).all() and frame.Id.tolist() == list(range(sum(TEST_LENGTHS)))


def test_demo_set_is_libriphone_where_a_window_beats_a_single_frame(tmp_path):
    write_demo_libriphone(tmp_path / "libriphone", num_train=40, num_test=4)
    dm = datamodule(tmp_path, concat_nframes=5)
    assert dm.layout == ML2022
    dm.setup("fit")
    x, y = dm.gather((torch.cat([dm.train_rows, dm.val_rows]), torch.cat([dm.train_y, dm.val_y])))
    # nearest class mean from one frame vs from the mean of its 5-frame window
    means = torch.stack([x[y == c, 2].mean(0) if (y == c).any() else torch.full((39,), 1e3) for c in range(41)])
    single = (torch.cdist(x[:, 2], means).argmin(1) == y).float().mean()
    window = (torch.cdist(x.mean(1), means).argmin(1) == y).float().mean()
    assert single < 0.6 and window > single + 0.2, (single, window)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_windows_are_gathered_on_the_gpu(tmp_path):
    make_libriphone(tmp_path)
    dm = datamodule(tmp_path, concat_nframes=11)
    dm.setup("fit")
    rows, labels = next(iter(dm.train_dataloader()))
    x, _ = dm.gather((rows.cuda(), labels.cuda()))
    assert x.is_cuda and torch.equal(x.cpu(), dm.gather((rows, labels))[0])


@pytest.mark.slow
def test_demo_fit_reaches_the_readme_accuracy_far_above_a_single_frame():
    """The README's demo figures: the default recipe ~0.81, one frame with the same model ~0.39."""
    cli = main(["fit", *QUIET, "--trainer.logger", "false"])
    windowed = float(cli.trainer.checkpoint_callback.best_model_score)
    single = main(["fit", *QUIET, "--trainer.logger", "false", "--data.concat_nframes", "1"])
    assert windowed >= 0.75 and float(single.trainer.checkpoint_callback.best_model_score) <= 0.5
    main(["predict", "--ckpt_path", "best", *QUIET])
    assert len(pd.read_csv(next(Path("runs/hw2").glob("*/prediction.csv")))) == cli.datamodule.num_test_samples
