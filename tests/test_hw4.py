"""HW4 on tiny generated files: layout parsing, crops and -20 padding, the packed cache, batched inference
equal to one-by-one, every bad input as one line, Id/Category order and a fit + predict round trip."""
import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from callbacks import validate_submission
from datamodules.errors import DataError
from datamodules.base import length_batches
from datamodules.voxceleb import PAD_VALUE, VoxCelebDataModule, pad_crops, write_demo_voxceleb
from homework.hw4 import main
from models.speaker import SpeakerClassifier
from tests.conftest import QUIET, user_error

SPEAKERS = ("id10300", "id10001", "id10200")  # class order differs from name order
TRAIN_LENGTHS = (5, 30, 12, 3, 40, 8, 20, 9, 14, 6, 25, 11)  # 4 per speaker, some shorter than the crops
TEST_LENGTHS = (7, 2, 33, 15, 4)
TINY = ["--model.d_model", "8", "--model.nhead", "2", "--model.num_layers", "1", "--model.dim_feedforward", "16",
        "--model.conv_kernel_size", "3", "--data.batch_size", "4", "--data.segment_len", "16",
        "--trainer.max_epochs", "1", "--torch_num_threads", "1", *QUIET]



def make_dataset(parent: Path, n_mels: int = 40, seed: int = 0) -> Path:
    """A `Dataset/` folder as the course ships it. Training utterance k is `uttr-train-k.pt`; test utterance k
    has feature 0 equal to 100 k + frame, so a test can follow the order."""
    root = parent / "Dataset"
    root.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    speakers = {}
    for k, length in enumerate(TRAIN_LENGTHS):
        path = f"uttr-train-{k:02d}.pt"
        torch.save(torch.randn(length, n_mels, generator=generator), root / path)
        speakers.setdefault(SPEAKERS[k % 3], []).append({"feature_path": path, "mel_len": length})
    utterances = []
    for k, length in enumerate(TEST_LENGTHS):
        path = f"uttr-test-{9 - k}.pt"  # names sort in reverse
        features = torch.randn(length, n_mels, generator=generator)
        features[:, 0] = 100 * k + torch.arange(length)
        torch.save(features, root / path)
        utterances.append({"feature_path": path, "mel_len": length})
    mapping = {"speaker2id": {s: k for k, s in enumerate(SPEAKERS)},
               "id2speaker": {str(k): s for k, s in enumerate(SPEAKERS)}}
    write_json(root / "mapping.json", mapping)
    write_json(root / "metadata.json", {"n_mels": n_mels, "speakers": speakers})
    write_json(root / "testdata.json", {"n_mels": n_mels, "utterances": utterances})
    return root


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value))


def datamodule(data_dir: Path, **kwargs) -> VoxCelebDataModule:
    return VoxCelebDataModule(str(data_dir), **{"batch_size": 4, "segment_len": 16, "val_ratio": 0.25, **kwargs})


# --- finding the data -----------------------------------------------------------------------------
def test_dataset_is_found_from_its_folder_or_the_parent_and_speakers_come_from_mapping(tmp_path):
    root = make_dataset(tmp_path)
    for given in (root, tmp_path):
        dm = datamodule(given)
        assert dm.root == root and dm.speakers == list(SPEAKERS) and dm.num_speakers == 3 and dm.n_mels == 40
    assert dm.kaggle_competition == "ml2022spring-hw4" and dm.submission_filename == "output.csv"
    dm.setup("fit")
    assert sorted(dm.train_index.tolist() + dm.val_index.tolist()) == list(range(len(TRAIN_LENGTHS)))
    assert len(dm.val_index) == 3 and dm.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # metadata.json's order
    again = datamodule(root)
    again.setup("fit")
    assert torch.equal(again.val_index, dm.val_index)  # reproducible from the seed
    other = datamodule(root, seed=1)
    other.setup("fit")
    assert not torch.equal(other.val_index, dm.val_index)


def test_the_split_is_the_sample_codes(tmp_path):
    make_dataset(tmp_path)
    dm = VoxCelebDataModule(str(tmp_path))  # the defaults: val_ratio 0.1, seed 87
    dm.setup("fit")
    # the sample: set_seed(87); dataset = myDataset(...); random_split(dataset, [int(0.9 * len), rest])
    torch.manual_seed(87)
    entries = list(range(len(TRAIN_LENGTHS)))
    trainlen = int(0.9 * len(entries))
    trainset, validset = torch.utils.data.random_split(entries, [trainlen, len(entries) - trainlen])
    assert dm.train_index.tolist() == trainset.indices and dm.val_index.tolist() == validset.indices
    with pytest.raises(DataError, match="--data.fold 1 needs --data.num_folds"):
        datamodule(tmp_path, fold=1).setup("fit")
    with pytest.raises(DataError, match="val_ratio must be between 0 and 1"):
        datamodule(tmp_path, val_ratio=1.0).setup("fit")


def test_the_model_gets_the_number_of_speakers_from_the_data(tmp_path):
    make_dataset(tmp_path)
    cli = main(["fit", "--data.data_dir", str(tmp_path), *TINY, "--trainer.fast_dev_run", "1"])
    assert cli.model.hparams.num_speakers == 3 and cli.model.net.head.weight.shape[0] == 3


# --- crops and padding ----------------------------------------------------------------------------
def test_crops_are_windows_of_segment_len_or_whole_utterances_padded_with_minus_20():
    lengths = torch.tensor([5, 30, 12, 3])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    data = torch.arange(int(offsets[-1]), dtype=torch.float16)[:, None].repeat(1, 2)  # row r holds r
    for _ in range(20):
        x, padding = pad_crops(data, offsets, torch.arange(4), segment_len=10)
        assert x.shape == (4, 10, 2) and x.dtype == torch.float32
        assert padding.sum(1).tolist() == [5, 0, 0, 7]
        assert (x[padding] == PAD_VALUE).all()
        assert x[0, :5, 0].tolist() == [0, 1, 2, 3, 4] and x[3, :3, 0].tolist() == [47, 48, 49]  # short: whole
        for b, (start, end) in ((1, (5, 35)), (2, (35, 47))):
            window = x[b, :, 0]
            assert (window.diff() == 1).all() and start <= window[0] and window[-1] < end  # one contiguous crop
    starts = {int(pad_crops(data, offsets, torch.tensor([1]), 10)[0][0, 0, 0]) for _ in range(200)}
    assert starts == set(range(5, 26))  # every start of the 30-frame utterance, as randint(0, 30 - 10)
    whole, padding = pad_crops(data, offsets, torch.tensor([2, 3]), segment_len=None)
    assert whole.shape == (2, 12, 2) and whole[0, :, 0].tolist() == list(range(35, 47))
    assert padding[1].tolist() == [False] * 3 + [True] * 9 and (whole[1, 3:] == PAD_VALUE).all()
    # a batch of only short utterances is as wide as its longest one (the sample's pad_sequence)
    assert pad_crops(data, offsets, torch.tensor([0, 3]), segment_len=128)[0].shape == (2, 5, 2)


def test_training_batches_are_crops_and_validation_whole_utterances(tmp_path):
    root = make_dataset(tmp_path)
    dm = datamodule(tmp_path)
    dm.setup("fit")
    seen = []
    for x, padding, y in dm.train_dataloader():
        assert x.shape[1] <= 16 and len(y) <= 4
        seen += y.tolist()
    assert sorted(seen) == sorted(dm.labels[dm.train_index].tolist())
    val = list(dm.val_dataloader())
    lengths = [int(n) for _, padding, _ in val for n in (~padding).sum(1)]
    assert lengths == sorted(dm.files.train[i][1] for i in dm.val_index.tolist())  # whole, sorted by length
    k = int(dm.val_index[0])
    stored = torch.load(root / dm.files.train[k][0]).half().float()
    row = [(b, i) for b, (_, padding, _) in enumerate(val) for i in range(len(padding))
           if (~padding[i]).sum() == len(stored)][0]
    assert torch.equal(val[row[0]][0][row[1], :len(stored)], stored)


def test_length_batches_cap_utterances_and_padded_frames():
    lengths = torch.tensor([50, 3, 400, 7, 100, 5, 60])
    batches = [torch.from_numpy(b) for b in length_batches(lengths.numpy(), max_padded=300, max_items=3)]
    assert sorted(torch.cat(batches).tolist()) == list(range(7))
    for batch in batches:
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * int(lengths[batch].max()) <= 300)
    assert torch.cat(batches).tolist() == torch.argsort(lengths, stable=True).tolist()


# --- the packed cache -----------------------------------------------------------------------------
def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, caplog):
    root = make_dataset(tmp_path)
    dm = datamodule(tmp_path)
    dm.setup("fit")
    (first,) = (root / ".cache").glob("train-*")
    stamp = (first / "data.bin").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = datamodule(tmp_path)
        again.setup("fit")
    assert "Using the packed train features" in caplog.text and (first / "data.bin").stat().st_mtime_ns == stamp
    torch.save(torch.zeros(5, 40), root / "uttr-train-00.pt")  # rewritten: packed again, stale cache removed
    changed = datamodule(tmp_path)
    changed.setup("fit")
    (second,) = (root / ".cache").glob("train-*")
    assert second != first and not changed.train_packed[0].any()


def test_an_edited_mel_len_is_caught_even_with_a_current_cache(tmp_path, capsys):
    root = make_dataset(tmp_path)
    datamodule(tmp_path).setup("fit")
    metadata = json.loads((root / "metadata.json").read_text())
    metadata["speakers"][SPEAKERS[1]][0]["mel_len"] = 31
    write_json(root / "metadata.json", metadata)
    with pytest.raises(DataError, match=r"uttr-train-01.pt: 30 frames, but metadata.json says 31"):
        datamodule(tmp_path).setup("fit")


# --- batched inference ----------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    dict(net="conformer", pooling="attention", head="amsoftmax"),
    dict(net="transformer", pooling="mean", head="linear"),
])
def test_batched_predictions_equal_one_by_one(settings, tmp_path):
    make_dataset(tmp_path)
    dm = datamodule(tmp_path, batch_size=8)
    dm.setup("predict")
    torch.manual_seed(0)
    model = SpeakerClassifier(num_speakers=3, d_model=16, nhead=2, num_layers=2, dim_feedforward=32,
                              conv_kernel_size=5, **settings).eval()
    with torch.no_grad():
        batches = [model.predict_step(batch, k) for k, batch in enumerate(dm.predict_dataloader())]
        batched = dm.collate_predictions(batches)
        single = torch.cat([model(dm.test_packed[k].float()[None]).softmax(-1) for k in range(len(TEST_LENGTHS))])
    assert len(batches) < len(TEST_LENGTHS)  # padding really happened
    assert torch.allclose(batched, single, atol=1e-5), (batched - single).abs().max()
    assert torch.allclose(batched.sum(1), torch.ones(len(TEST_LENGTHS)))  # probabilities


def test_test_utterances_follow_testdata_order(tmp_path):
    make_dataset(tmp_path)
    dm = datamodule(tmp_path, batch_size=2)
    dm.setup("predict")
    # each prediction's "probabilities" = its utterance's first feature, which holds 100 k
    marks = [x[:, 0, :1] for x, _ in dm.predict_dataloader()]
    assert dm.collate_predictions(marks)[:, 0].tolist() == [100 * k for k in range(len(TEST_LENGTHS))]
    frame = dm.to_submission(torch.eye(3)[[2, 0, 1, 1, 0]])
    validate_submission(frame, ["Id", "Category"], len(TEST_LENGTHS))
    assert frame.Id.tolist() == [f"uttr-test-{9 - k}.pt" for k in range(5)]
    assert frame.Category.tolist() == ["id10200", "id10300", "id10001", "id10001", "id10300"]


# --- bad input: one line each, before anything is written ------------------------------------------
def corrupt(root: Path, what: str) -> str:
    """Break the set in one way; return the text the error must hold."""
    metadata = json.loads((root / "metadata.json").read_text())
    if what == "missing json":
        (root / "testdata.json").unlink()
        return "testdata.json: file not found"
    if what == "missing feature file":
        (root / "uttr-train-04.pt").unlink()
        return "uttr-train-04.pt: file not found"
    if what == "many missing feature files":
        for k in (1, 5, 7):
            (root / f"uttr-train-{k:02d}.pt").unlink()
        return "uttr-train-01.pt: file not found, and 2 more of the 12 feature files metadata.json lists"
    if what == "json without keys":
        write_json(root / "metadata.json", {"n_mels": 40, "speaker": metadata["speakers"]})
        return "metadata.json: no 'speakers' key"
    if what == "not json":
        (root / "mapping.json").write_text("{'speaker2id': ")
        return "mapping.json: not valid JSON"
    if what == "wrong width":
        torch.save(torch.zeros(12, 39), root / "uttr-train-02.pt")
        return r"uttr-train-02.pt: tensor of shape \(12, 39\), expected \(frames, 40\)"
    if what == "wrong length":
        torch.save(torch.zeros(13, 40), root / "uttr-train-02.pt")
        return "uttr-train-02.pt: 13 frames, but metadata.json says 12"
    if what == "unknown speaker":
        metadata["speakers"]["id99999"] = metadata["speakers"].pop(SPEAKERS[2])
        write_json(root / "metadata.json", metadata)
        return "metadata.json: speaker 'id99999' is not in mapping.json"
    if what == "nan":
        features = torch.zeros(15, 40)
        features[4, 2] = float("nan")
        torch.save(features, root / "uttr-test-6.pt")  # a test file: found when fit starts
        return "uttr-test-6.pt: NaN in frame 4"
    if what == "inf":
        features = torch.zeros(12, 40)
        features[0, 0] = float("inf")
        torch.save(features, root / "uttr-train-02.pt")
        return "uttr-train-02.pt: infinite value in frame 0"
    if what == "empty test list":
        write_json(root / "testdata.json", {"n_mels": 40, "utterances": []})
        return "testdata.json: the 'utterances' list is empty"
    if what == "n_mels disagree":
        write_json(root / "testdata.json", {**json.loads((root / "testdata.json").read_text()), "n_mels": 80})
        return "testdata.json: n_mels 80, but metadata.json has 40"
    raise ValueError(what)


@pytest.mark.parametrize("what", ["missing json", "missing feature file", "many missing feature files",
                                  "json without keys", "not json",
                                  "wrong width", "wrong length", "unknown speaker", "nan", "inf",
                                  "empty test list", "n_mels disagree"])
def test_bad_input_is_one_line_naming_the_problem_and_nothing_is_written(what, tmp_path, capsys):
    root = make_dataset(tmp_path / "data")
    expected = corrupt(root, what)
    line = user_error(capsys, main, ["fit", "--data.data_dir", str(tmp_path / "data"), *TINY])
    assert re.search(expected, line), line


# --- the whole workflow ---------------------------------------------------------------------------
@pytest.mark.parametrize("recipe, net", [("hw4.yaml", "conformer"), ("hw4_sample.yaml", "transformer")])
def test_every_shipped_recipe_trains_a_batch(recipe, net, tmp_path):
    make_dataset(tmp_path)
    config = Path(__file__).resolve().parents[1] / "homework" / "configs" / recipe
    cli = main(["fit", "--config", str(config), "--data.data_dir", str(tmp_path), "--data.batch_size", "4",
                "--trainer.fast_dev_run", "1", *QUIET])
    assert cli.model.hparams.net == net and cli.model.hparams.num_speakers == 3


def test_fit_then_predict_writes_a_valid_submission(tmp_path):
    make_dataset(tmp_path / "data")
    data = ["--data.data_dir", str(tmp_path / "data")]
    cli = main(["fit", *data, *TINY, "--model.head", "linear", "--data.segment_len", "8"])
    assert cli.trainer.checkpoint_callback.monitor == "val_acc" and cli.trainer.checkpoint_callback.mode == "max"
    predicted = main(["predict", "--ckpt_path", "best", *data, *QUIET])
    assert predicted.datamodule.segment_len == 8 and predicted.model.hparams.head == "linear"  # from the checkpoint
    (written,) = Path("runs/hw4").glob("*/output.csv")
    frame = pd.read_csv(written)
    validate_submission(frame, ["Id", "Category"], len(TEST_LENGTHS))
    assert frame.Id.tolist() == [f"uttr-test-{9 - k}.pt" for k in range(5)]
    assert frame.Category.isin(SPEAKERS).all()


def test_demo_set_is_the_real_layout_where_speakers_differ_in_more_than_a_level(tmp_path):
    write_demo_voxceleb(tmp_path / "Dataset", num_speakers=6, per_speaker=6, num_test=3)
    dm = datamodule(tmp_path)
    assert dm.num_speakers == 6 and dm.is_demo is False and len(dm.files.test) == 3
    dm.setup("fit")
    lengths = dm.train_packed.lengths
    assert lengths.min() < 128 < lengths.max()  # some crops, some whole utterances
    # the mean level of an utterance says little about its speaker: the level is randomised per utterance
    levels = torch.stack([dm.train_packed[k].float().mean() for k in range(len(lengths))])
    by_speaker = torch.stack([levels[dm.labels == s].mean() for s in range(6)])
    assert by_speaker.std() < levels.std()


def test_cross_validation_trains_every_fold_and_predicts_from_the_folds(tmp_path):
    make_dataset(tmp_path / "data")
    data = ["--data.data_dir", str(tmp_path / "data")]
    main(["fit", *data, *TINY, "--data.num_folds", "2", "--data.fold", "all"])
    (cv_dir,) = [d for d in Path("runs/hw4").iterdir() if d.is_dir() and "cv2" in d.name]
    main(["predict", "--ckpt_path", str(cv_dir), *data, *QUIET])
    (written,) = Path("runs/hw4").rglob("output.csv")
    frame = pd.read_csv(written)
    validate_submission(frame, ["Id", "Category"], len(TEST_LENGTHS))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["hw4.yaml", "hw4_sample.yaml"])
def test_each_recipe_learns_the_demo_speakers_far_above_chance(recipe):
    config = Path(__file__).resolve().parents[1] / "homework" / "configs" / recipe
    cli = main(["fit", "--config", str(config), *QUIET])
    assert cli.datamodule.is_demo and cli.datamodule.num_speakers == 30
    assert float(cli.trainer.checkpoint_callback.best_model_score) > 0.5  # README: 0.73 both; chance 1/30
