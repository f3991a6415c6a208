"""Where students really run the commands (issue #16): files saved by Excel, Notepad or numpy, a corpus
smaller than the course's, output piped to a log, and `--trainer.max_steps 3` as a quick check."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from datamodules.covid import CovidDataModule
from datamodules.libriphone import LibriPhoneDataModule
from datamodules.packed import load_tensor
from datamodules.translation import COURSE_VOCAB_SIZE, TranslationDataModule
from datamodules.translation_demo import write_demo_translation
from datamodules.voxceleb import VoxCelebDataModule
from homework import hw1, hw2, hw5, registry
from tests.conftest import QUIET, user_error

ROOT = Path(__file__).resolve().parents[1]
BOM = b"\xef\xbb\xbf"


# --- A. valid files, as other programs save them ---------------------------------------------------------
def saved_on_windows(src: Path, dst: Path) -> Path:
    """A copy of `src` whose text files (CSV, id lists, JSON, corpus) start with the UTF-8 byte-order mark and
    end lines with CRLF, as Excel ("CSV UTF-8") and Notepad save them."""
    shutil.copytree(src, dst)
    for path in dst.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".txt", ".json", ".en", ".zh"):
            path.write_bytes(BOM + path.read_bytes().replace(b"\n", b"\r\n"))
    return dst


def read_hw1(data_dir: Path) -> list:
    dm = CovidDataModule(str(data_dir))
    dm.setup("fit")
    dm.check_test_data()
    return [dm.layout.name, dm.train_x, dm.train_y, dm.val_x, dm.val_y, dm.test_x]


def read_hw2(data_dir: Path) -> list:
    dm = LibriPhoneDataModule(str(data_dir))
    dm.setup("fit")
    dm.check_test_data()
    return [dm.train_ids, dm.val_ids, dm.test_ids, dm.train_y, dm.val_y, dm.train_source.data]


def read_hw4(data_dir: Path) -> list:
    files = VoxCelebDataModule(str(data_dir)).files
    return [files.speakers, files.n_mels, files.train, files.test]


def read_hw5(data_dir: Path) -> list:
    dm = TranslationDataModule(str(data_dir), vocab_size=100)
    dm.setup("fit")
    dm.check_test_data()
    return [dm.train.src, dm.train.tgt, dm.val.src, dm.val.tgt, dm.test.src]


@pytest.mark.parametrize("datamodule, read", [(CovidDataModule, read_hw1), (LibriPhoneDataModule, read_hw2),
                                               (VoxCelebDataModule, read_hw4), (TranslationDataModule, read_hw5)],
                         ids=["hw1", "hw2", "hw4", "hw5"])
def test_text_files_with_a_byte_order_mark_and_crlf_read_as_without(datamodule, read, tmp_path):
    datamodule.write_demo(tmp_path / "clean")
    windows = saved_on_windows(tmp_path / "clean", tmp_path / "windows")
    for got, want in zip(read(windows), read(tmp_path / "clean"), strict=True):
        assert torch.equal(got, want) if isinstance(got, torch.Tensor) else got == want


def test_feature_files_saved_from_numpy_are_read(tmp_path):
    """`torch.save(array)` (torch's safe loader refuses numpy's classes unless allowed) and `np.save` under the
    .pt name: the same features as the tensors they replace."""
    LibriPhoneDataModule.write_demo(tmp_path / "clean")
    shutil.copytree(tmp_path / "clean", tmp_path / "numpy")
    folder = tmp_path / "numpy" / "libriphone" / "feat" / "train"
    first, second, *_ = sorted(folder.glob("*.pt"))
    torch.save(torch.load(first).numpy(), first)
    array = torch.load(second).numpy().astype(np.float64)
    with open(second, "wb") as f:  # (np.save to a path would add .npy)
        np.save(f, array)
    clean = torch.load(tmp_path / "clean" / "libriphone" / "feat" / "train" / first.name)
    assert torch.equal(load_tensor(first), clean)
    for got, want in zip(read_hw2(tmp_path / "numpy"), read_hw2(tmp_path / "clean"), strict=True):
        assert torch.equal(got, want) if isinstance(got, torch.Tensor) else got == want


def test_hw5_on_a_small_corpus_gets_the_vocabulary_it_can_make_and_predict_rebuilds_it(tmp_path, capsys, caplog):
    """The course's 8000 pieces do not fit a 300-pair corpus: unset, the vocabulary is the largest SentencePiece
    makes (said on stderr); the checkpoint records that size, so `predict` rebuilds the same model."""
    data = tmp_path / "small"
    write_demo_translation(data, num_train=300, num_test=12)  # a folder named: not the demo (its own vocabulary)
    tiny = ["--data.max_tokens", "512", "--data.val_ratio", "0.1", "--model.embed_dim", "16", "--model.hidden_dim",
            "32", "--model.encoder_layers", "1", "--model.decoder_layers", "1", "--model.attention_heads", "2",
            "--model.beam_size", "1", "--model.val_bleu_sentences", "4", "--model.max_len_b", "3", *QUIET]
    cli = hw5.main(["fit", "--data.data_dir", str(data), "--trainer.max_epochs", "1",
                    "--trainer.limit_train_batches", "2", *tiny])
    said = [r.getMessage() for r in caplog.records if "SentencePiece pieces" in r.getMessage()]
    size = cli.model.hparams.vocab_size
    assert said == [f"{data}: this corpus makes at most {size} SentencePiece pieces, fewer than the course's "
                    f"{COURSE_VOCAB_SIZE}: using {size} (--data.vocab_size sets another size)"]
    assert 100 < size < COURSE_VOCAB_SIZE and len(cli.datamodule.tokenizer) == size
    best = cli.trainer.checkpoint_callback.best_model_path
    saved = torch.load(best, weights_only=True)
    assert saved["datamodule_hyper_parameters"]["vocab_size"] == saved["hyper_parameters"]["vocab_size"] == size
    capsys.readouterr()
    predicted = hw5.main(["predict", "--ckpt_path", best, *tiny])
    assert predicted.model.hparams.vocab_size == size
    assert len((Path(best).parents[1] / "prediction.txt").read_text(encoding="utf-8").splitlines()) == 12


# --- B. output piped to a log --------------------------------------------------------------------------------
def piped(homework: str, *args: str, cwd: Path) -> tuple[int, str]:
    """Run a command as `python homework/hwN.py ... > log 2>&1` does: stdout and stderr one pipe, no terminal.
    The bytes as written (text mode would turn each carriage return into a newline)."""
    out = subprocess.run([sys.executable, str(ROOT / "homework" / f"{homework}.py"), *args], cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    return out.returncode, out.stdout.decode()


def whole_lines(log: str, *starts: str) -> None:
    """No carriage return anywhere, and each result line begins a line of its own."""
    assert "\r" not in log, [line for line in log.split("\n") if "\r" in line][:3]
    lines = log.split("\n")
    for start in starts:
        assert any(line.startswith(start) for line in lines), (start, lines[-8:])


def test_a_piped_quick_check_ends_in_whole_lines_saying_what_it_saved(tmp_path, capsys, monkeypatch):
    """HW2's first fit packs its features (a progress bar on a terminal); `--trainer.max_steps 3` ends before
    validation; `critical` computes Hessian-vector products (another bar): in a log, lines only. (`critical` runs
    in this process, its stdout and stderr captured as one stream, in order.)"""
    code, log = piped("hw2", "fit", "--trainer.max_steps", "3", "--model.hidden_dim", "8", "--model.num_layers", "1",
                      "--data.batch_size", "64", "--diagnose", "false", cwd=tmp_path)
    assert code == 0, log[-3000:]
    (run,) = (tmp_path / "runs" / "hw2").iterdir()
    whole_lines(log, "Packing 240 train files once", "Packed 240 train files")
    assert log.strip().split("\n")[-3:] == [
        f"No validation ran in 3 steps, so no best checkpoint: last.ckpt saved in runs/hw2/{run.name}/checkpoints",
        f"Run directory: runs/hw2/{run.name}",
        f"Next: python {ROOT / 'homework' / 'hw2.py'} fit --config runs/hw2/{run.name}/config.yaml "
        "--trainer.max_steps -1  (validation, which keeps the best checkpoint, runs at the end of each epoch)"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert not (run / ".training.lock").exists()  # the run is over: nothing holds it

    monkeypatch.setattr(sys, "stderr", sys.stdout)
    hw2.main(["critical", "--ckpt_path", "last", "--max_full_params", "0"])  # (Lanczos: a few hundred products)
    whole_lines(capsys.readouterr().out, "Computing the gradient and the Hessian's extreme eigenvalues",
                "Critical-point analysis of ", "Verdict: ")


def test_a_piped_learning_rate_range_test_ends_in_whole_lines(capsys, monkeypatch):
    """Lightning's range test draws its own tqdm bar; in a log (here stdout and stderr captured as one stream,
    in order) it is one line, and the result lines are whole."""
    monkeypatch.setattr(sys, "stderr", sys.stdout)
    hw1.main(["fit", "--find_lr", "true", "--data.minibatches_per_step", "1", "--trainer.logger", "false"])
    log = capsys.readouterr().out
    whole_lines(log, "Learning-rate range test: 100 training steps", "Learning-rate finder: lr ",
                "Next: python -m homework.hw1 fit --config runs/hw1/")


# --- C. a fit that ends before validating ------------------------------------------------------------------
#: Three steps inside the first epoch: each homework's tiny recipe (homework/configs/hwN_tiny.yaml), its epoch not
#: cut to 3 batches, and HW1 one minibatch per step (its default trains a whole epoch in one step).
STEPS = ["--trainer.max_steps", "3", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1.0"]
EXTRA = {"hw1": ["--data.minibatches_per_step", "1", "--data.batch_size", "8"]}


@pytest.mark.parametrize("homework", registry.names())
def test_max_steps_before_the_first_validation_ends_normally_keeping_last_ckpt(homework, capsys):
    main = registry.module(homework).main
    options = [*registry.tiny(homework), *STEPS, *EXTRA.get(homework, [])]
    main(["fit", *options, "--trainer.logger", "false", *QUIET])
    (run,) = Path("runs", homework).iterdir()
    assert capsys.readouterr().out.strip().splitlines()[-3:] == [
        f"No validation ran in 3 steps, so no best checkpoint: last.ckpt saved in {run}/checkpoints",
        f"Run directory: {run}",
        f"Next: python -m homework.{homework} fit --config {run}/config.yaml --trainer.max_steps -1  "
        f"(validation, which keeps the best checkpoint, runs at the end of each epoch)"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    config = yaml.safe_load((run / "config.yaml").read_text())  # what the Next line re-runs: the options typed
    for option, value in dict(zip(options[::2], options[1::2])).items():  # (the last of each wins)
        section, name = option[2:].split(".")
        assert config[section][name] == yaml.safe_load(value), option
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["best_checkpoint"] is None


def test_resuming_a_run_its_step_limit_ended_names_the_limit_not_early_stopping(capsys):
    """A `--trainer.max_steps 3` check is finished: resuming it says which limit ended it and how to lift it
    (not that early stopping would end it again), and lifting it continues the same run."""
    main = hw1.main
    main(["fit", "--trainer.max_steps", "3", *EXTRA["hw1"], *QUIET])
    (run,) = Path("runs", "hw1").iterdir()
    line = user_error(capsys, main, ["fit", "--resume", str(run)])
    assert line == (f"error: --resume: run {run.name} finished at its limit (--trainer.max_steps 3); to train it "
                    f"longer: fit --resume {run} --trainer.max_steps N (-1: no limit)")
    main(["fit", "--resume", str(run), "--trainer.max_steps", "-1", "--trainer.max_epochs", "2"])
    assert [p.name for p in Path("runs", "hw1").iterdir()] == [run.name]
    assert json.loads((run / "run.json").read_text())["epochs"] == 2
    # fewer epochs than it has trained: one line, not Lightning's MisconfigurationException
    line = user_error(capsys, main, ["fit", "--resume", str(run), "--trainer.max_epochs", "1"])
    assert line == (f"error: --trainer.max_epochs 1: run {run.name} has already trained 2 epochs; to train it longer "
                    f"give more (e.g. --trainer.max_epochs 4)")
