"""HW5 on tiny generated corpora: the course's cleaning, the cached SentencePiece model, token-capped
batches (also dealt out under DDP), masks, greedy/beam search and the KV cache, clear errors, and a
fit + predict + test round trip through the CLI (also from a folder holding only test.raw.en)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.trainer.connectors.data_connector import _get_distributed_sampler, _update_dataloader
from torch.utils.data import DataLoader

from datamodules.errors import DataError
from datamodules.translation import TranslationDataModule
from datamodules.translation_demo import number_en, number_zh, write_demo_translation
from datamodules.translation_text import clean_corpus, clean_s, read_lines, strQ2B
from datamodules.translation_tokens import BOS_ID, EOS_ID, PAD_ID, SentencePairs, TokenBatchSampler
from homework.hw5 import main
from models.seq2seq import RNNSeq2Seq, TransformerSeq2Seq, beam_search, greedy_search
from tests.conftest import QUIET, shared_data

TINY_MODEL = ["--model.embed_dim", "32", "--model.hidden_dim", "64", "--model.encoder_layers", "1",
              "--model.decoder_layers", "1", "--model.attention_heads", "2", "--model.beam_size", "2",
              "--model.val_bleu_sentences", "8", "--model.max_len_b", "5"]
TINY = ["--data.vocab_size", "100", "--data.val_ratio", "0.1", "--data.max_tokens", "512",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.logger", "false",
        *TINY_MODEL, *QUIET]


def corpus(directory: Path, num_train: int = 300, num_test: int = 12) -> Path:
    write_demo_translation(directory, num_train=num_train, num_test=num_test)
    return directory


def datamodule(directory: Path, **kwargs) -> TranslationDataModule:
    return TranslationDataModule(str(directory), **{"vocab_size": 100, "val_ratio": 0.1, "max_tokens": 256, **kwargs})


def expect_user_error(capsys, args: list[str], *fragments: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- cleaning -------------------------------------------------------------------------------------
def test_cleaning_follows_the_course():
    assert strQ2B("（Ｈｉ！）　ok") == "(Hi!) ok"
    assert clean_s("Well-known (aside) facts, really!", "en") == "Wellknown facts , really !"
    assert clean_s("“你好”，（旁白）世界！ 再見—了", "zh") == '" 你好 " , 世界 ! 再見了'


def test_cleaning_drops_empty_long_and_uneven_pairs_and_keeps_line_numbers():
    src = ["Hello .", "(only an aside)", "one two three four five", "a b c d e f g h i j", "Fine ."]
    tgt = ["你好。", "旁白", "一二三四五", "好", "好的。"]
    kept_src, kept_tgt, lines = clean_corpus(src, tgt, max_len=6, ratio=9)
    # line 1 is empty once the aside is gone; line 3 has 10 English words, over max_len 6
    assert lines.tolist() == [0, 2, 4]
    assert kept_tgt == ["你好 。", "一二三四五", "好的 。"]
    # with the length filter off, the ratio filter still removes 10 words against 1 character
    _, _, lines = clean_corpus(src[3:], tgt[3:], max_len=0, ratio=9)
    assert lines.tolist() == [1]


def test_a_corpus_emptied_by_cleaning_says_which_filter_removed_it():
    with pytest.raises(DataError, match=r"no sentence pair is left.*most were removed as length ratio over ratio=2"):
        clean_corpus(["a b c d e", "a b c d e f"], ["好", "好"], max_len=1000, ratio=2, source="x.en")


def test_demo_numbers_read_as_the_course_would_write_them():
    assert [number_zh(n) for n in (10, 15, 105, 110, 1005, 20300, 42312)] == [
        "十", "十五", "一百零五", "一百一十", "一千零五", "二万零三百", "四万二千三百一十二"]
    assert number_en(42312) == "forty-two thousand three hundred and twelve"


# --- files and errors -------------------------------------------------------------------------------
def test_line_count_mismatch_names_both_counts(tmp_path, capsys):
    root = corpus(tmp_path / "d")
    lines = (root / "train_dev.raw.zh").read_text().splitlines()
    (root / "train_dev.raw.zh").write_text("\n".join(lines[:-2]) + "\n")
    expect_user_error(capsys, ["fit", "--data.data_dir", str(root), *TINY],
                      "train_dev.raw.en has 300 lines but train_dev.raw.zh has 298")
    assert not Path("runs").exists() or not list(Path("runs").rglob("*.ckpt"))


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path, capsys):
    root = corpus(tmp_path / "d")
    data = (root / "test.raw.en").read_bytes()
    (root / "test.raw.en").write_bytes(data[:10] + "測".encode("big5") + data[10:])
    expect_user_error(capsys, ["fit", "--data.data_dir", str(root), *TINY],
                      "test.raw.en: not UTF-8 text (byte 10 is 0xb4)")


def test_half_a_training_pair_or_no_files_is_a_clear_error(tmp_path, capsys):
    root = corpus(tmp_path / "d")
    (root / "train_dev.raw.zh").unlink()
    with pytest.raises(DataError, match="found train_dev.raw.en but not train_dev.raw.zh"):
        TranslationDataModule.locate(root)
    expect_user_error(capsys, ["fit", "--data.data_dir", str(tmp_path / "nowhere"), *TINY], "does not exist")


def test_lines_split_on_newlines_only(tmp_path):
    path = tmp_path / "x.en"
    path.write_bytes("one\u2028still one\r\ntwo\n".encode())
    assert read_lines(path) == ["one\u2028still one", "two"]


def test_test_labels_only_when_test_zh_holds_references(tmp_path):
    root = corpus(tmp_path / "d")
    with pytest.raises(DataError, match="holds only the course's '。' placeholder lines.*cannot compute BLEU"):
        datamodule(root).check_test_labels()
    (root / "test.raw.zh").write_text("".join(f"{number_zh(i + 1)}。\n" for i in range(12)))
    dm = datamodule(root)
    dm.check_test_labels()  # references: no error
    assert dm.test_references[2] == "三。"


# --- subwords ---------------------------------------------------------------------------------------
def test_sentencepiece_is_trained_once_and_retrained_when_the_corpus_or_settings_change(tmp_path):
    root = corpus(tmp_path / "d")
    dm = datamodule(root)
    first = dm.ensure_tokenizer()
    cached = list((root / ".cache").glob("spm_*.model"))
    assert len(cached) == 1 and len(first) == 100
    cached[0].write_bytes(cached[0].read_bytes())  # same bytes; a retrain would replace the file
    mtime = cached[0].stat().st_mtime_ns
    assert datamodule(root).ensure_tokenizer().model == first.model
    assert cached[0].stat().st_mtime_ns == mtime
    datamodule(root, vocab_size=90).ensure_tokenizer()
    lines = (root / "train_dev.raw.en").read_text().splitlines()
    lines[0] = "Something new ."
    (root / "train_dev.raw.en").write_text("\n".join(lines) + "\n")
    datamodule(root).ensure_tokenizer()
    assert len(list((root / ".cache").glob("spm_*.model"))) == 3


def test_a_read_only_data_folder_gets_its_cache_elsewhere(tmp_path, monkeypatch):
    root = corpus(tmp_path / "d")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    root.chmod(0o555)
    try:
        assert datamodule(root).cache_folder() == tmp_path / "user-cache" / "ntu-ml-hw5"
    finally:
        root.chmod(0o755)
    assert datamodule(root).cache_folder() == root / ".cache"
    assert datamodule(root, cache_dir=str(tmp_path / "c")).cache_folder() == tmp_path / "c"


def test_a_vocabulary_too_large_for_the_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot build a 5000-piece vocabulary.*--data.vocab_size"):
        datamodule(corpus(tmp_path / "d"), vocab_size=5000).ensure_tokenizer()


# --- batches ----------------------------------------------------------------------------------------
def test_no_batch_is_over_the_token_cap_and_every_sentence_comes_once():
    lengths = np.random.default_rng(0).integers(1, 60, size=1000)
    sampler = TokenBatchSampler(lengths, max_tokens=300, shuffle=True)
    epochs = []
    for epoch in range(2):  # the epoch changes the tie-breaking and order, not the count
        sampler.set_epoch(epoch)
        batches = list(sampler)
        epochs.append(batches)
        assert len(batches) == len(sampler)
        assert all(len(b) * lengths[b].max() <= 300 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(1000))
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # as in every DDP process
    # a sentence longer than the cap gets a batch of its own
    assert [len(b) for b in TokenBatchSampler(np.array([5, 500, 5]), 100, shuffle=False)] == [2, 1]


def test_token_batches_are_dealt_out_to_ddp_processes():
    """What Lightning does to a training loader under DDP: each process gets whole batches of its own."""
    rng = np.random.default_rng(0)
    pairs = SentencePairs([[5] * n for n in rng.integers(1, 40, 500)], [[6] * n for n in rng.integers(1, 40, 500)])
    loader = DataLoader(pairs, sampler=TokenBatchSampler(pairs.lengths(), 300, shuffle=True), batch_size=None)
    ranks = []
    for rank in (0, 1):
        sampler = _get_distributed_sampler(loader, shuffle=True, overfit_batches=0, num_replicas=2, rank=rank)
        ranks.append(list(_update_dataloader(loader, sampler)))
    assert len(ranks[0]) == len(ranks[1])  # every process takes the same number of steps
    seen = [i for batches in ranks for b in batches for i in b["index"].tolist()]
    assert set(seen) == set(range(500)) and len(seen) < 500 + 300  # at most one batch is repeated to even them out
    assert all(b["src"].numel() <= 300 and b["tgt_in"].numel() <= 300 for batches in ranks for b in batches)


def test_batches_pad_and_mark_the_sequences():
    pairs = SentencePairs([[5, 6, 7], [8]], [[9], [10, 11]])
    batch = pairs[[0, 1]]
    assert batch["src"].tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch["tgt_in"].tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch["tgt_out"].tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch["index"].tolist() == [0, 1]


# --- networks and decoding ------------------------------------------------------------------------
def nets(vocab: int = 20) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [TransformerSeq2Seq(vocab, 32, 64, 2, 2, 4, dropout=0.1).eval(),
            RNNSeq2Seq(vocab, 16, 24, 1, 1, dropout=0.3).eval()]


def source_batch() -> torch.Tensor:
    return torch.tensor([[5, 6, 7, 8, EOS_ID], [9, 10, EOS_ID, PAD_ID, PAD_ID], [11, EOS_ID, PAD_ID, PAD_ID, PAD_ID]])


@pytest.mark.parametrize("net", nets(), ids=["transformer", "rnn"])
def test_padding_does_not_change_a_sentences_output(net):
    src, tgt = source_batch(), torch.tensor([[BOS_ID, 12, 13]] * 3)
    batched = net(src, tgt)
    alone = net(src[1:2, :3], tgt[1:2])
    assert torch.allclose(batched[1], alone[0], atol=1e-5)


@pytest.mark.parametrize("net", nets(), ids=["transformer", "rnn"])
def test_cached_step_by_step_decoding_equals_the_full_pass(net):
    src = source_batch()
    tgt = torch.tensor([[BOS_ID, 12, 13, 14], [BOS_ID, 15, 16, 4], [BOS_ID, 17, 5, 6]])
    full = net(src, tgt).log_softmax(-1)
    state = net.encode(src)
    for t in range(tgt.shape[1]):
        step, state = net.decode_step(tgt[:, t], state)
        assert torch.allclose(step, full[:, t], atol=1e-5), f"step {t}"


@pytest.mark.parametrize("net", nets(), ids=["transformer", "rnn"])
def test_beam_of_one_is_greedy(net):
    src = source_batch()
    greedy = greedy_search(net, src, BOS_ID, EOS_ID, PAD_ID, max_len_a=1.0, max_len_b=4)
    assert beam_search(net, src, BOS_ID, EOS_ID, PAD_ID, beam_size=1, max_len_a=1.0, max_len_b=4) == greedy
    assert any(len(g) for g in greedy)


@pytest.mark.parametrize("net", nets(), ids=["transformer", "rnn"])
def test_decoding_runs_under_mixed_precision(net):
    """As `predict` does with --trainer.precision bf16-mixed (the default on GPUs that support it)."""
    src = source_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for out in (greedy_search(net, src, BOS_ID, EOS_ID, PAD_ID, 1.0, 4),
                    beam_search(net, src, BOS_ID, EOS_ID, PAD_ID, 3, 1.0, 1.0, 4)):
            assert len(out) == 3 and all(len(tokens) <= 9 for tokens in out)


class GardenPath(torch.nn.Module):
    """A decoder whose likeliest first token (A, p=.6) leads nowhere good, while B (p=.4) ends at once."""

    A, B = 4, 5

    def encode(self, src):
        return {"length": src.ne(PAD_ID).sum(1)}

    def decode_step(self, prev, state):
        probs = torch.full((len(prev), 6), 1e-9)
        probs[prev == BOS_ID, self.A], probs[prev == BOS_ID, self.B] = 0.6, 0.4
        probs[prev == self.A, EOS_ID], probs[prev == self.A, self.A], probs[prev == self.A, self.B] = 0.2, 0.4, 0.4
        probs[prev == self.B, EOS_ID] = 1.0
        probs[prev == EOS_ID, EOS_ID] = 1.0
        return probs.log(), state


def test_beam_search_finds_what_greedy_misses():
    src = torch.tensor([[7, 7, EOS_ID]] * 2)
    assert greedy_search(GardenPath(), src, BOS_ID, EOS_ID, PAD_ID, 1.0, 3) == [[4, 4, 4, 4, 4]] * 2
    assert beam_search(GardenPath(), src, BOS_ID, EOS_ID, PAD_ID, 2, 1.0, 1.0, 3) == [[5]] * 2


def test_outputs_stop_at_the_course_length_limit():
    net = nets()[0]
    src = source_batch()
    limits = (src.ne(PAD_ID).sum(1) * 0.5 + 1).long()
    for out in (greedy_search(net, src, BOS_ID, EOS_ID, PAD_ID, 0.5, 1),
                beam_search(net, src, BOS_ID, EOS_ID, PAD_ID, 3, 1.0, 0.5, 1)):
        assert all(len(tokens) < int(limit) for tokens, limit in zip(out, limits))  # </s> takes the last place


# --- through the CLI --------------------------------------------------------------------------------
def test_fit_predict_test_round_trip(tmp_path, capsys):
    root = corpus(tmp_path / "d", num_train=300, num_test=12)
    cli = main(["fit", "--data.data_dir", str(root), *TINY, "--trainer.max_epochs", "2",
                "--checkpoint.save_top_k", "-1"])
    ckpt = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert ckpt.is_file() and "val_bleu" in cli.trainer.callback_metrics
    capsys.readouterr()

    # decoding settings are chosen when decoding; the last two epochs' weights averaged
    predicted = main(["predict", "--ckpt_path", "last", "--model.beam_size", "1", "--model.average_checkpoints", "2",
                      *QUIET])
    assert predicted.model.beam_size == 1
    path = predicted.trainer.callbacks[[type(c).__name__ for c in predicted.trainer.callbacks].index(
        "KaggleSubmissionWriter")].written_path
    lines = path.read_text(encoding="utf-8").splitlines()
    assert path.name == "prediction.txt" and len(lines) == 12
    assert "wrote predictions" in capsys.readouterr().out.lower()
    expect_user_error(capsys, ["predict", "--ckpt_path", "last", "--model.average_checkpoints", "3", *QUIET],
                      "holds checkpoints of 2 epoch(s)", "--checkpoint.save_top_k -1")

    # the checkpoint is the model: a folder holding only new text to translate
    new = tmp_path / "new"
    new.mkdir()
    (new / "test.raw.en").write_text("Three hundred and twelve .\nFive .\n")
    main(["predict", "--ckpt_path", "best", "--data.data_dir", str(new), "--submission.output_dir", str(new), *QUIET])
    assert len((new / "prediction.txt").read_text(encoding="utf-8").splitlines()) == 2

    # the course's placeholder test.raw.zh cannot be scored; real references can
    expect_user_error(capsys, ["test", "--ckpt_path", "best", *QUIET], "placeholder lines", "cannot compute BLEU")
    (root / "test.raw.zh").write_text("".join(f"{number_zh(i + 1)}。\n" for i in range(12)))
    tested = main(["test", "--ckpt_path", "best", *QUIET])
    assert "test_bleu" in tested.trainer.callback_metrics


def test_averaged_weights_are_the_mean_of_the_epochs(tmp_path):
    from models.translation import average_checkpoints

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for epoch, value in enumerate([1.0, 2.0, 4.0]):
        torch.save({"epoch": epoch, "state_dict": {"w": torch.full((2,), value), "n": torch.tensor(epoch)}},
                   folder / f"best-epoch={epoch:03d}.ckpt")
    averaged = average_checkpoints(folder / "best-epoch=002.ckpt", 2)
    assert averaged["w"].tolist() == [3.0, 3.0]
    assert average_checkpoints(folder / "best-epoch=001.ckpt", 2)["w"].tolist() == [1.5, 1.5]


def test_predictions_return_to_file_order(tmp_path):
    dm = datamodule(corpus(tmp_path / "d", num_test=5))
    batches = [{"index": torch.tensor([3, 0]), "tokens": [[30], [0]]},
               {"index": torch.tensor([4, 1, 2]), "tokens": [[40], [10], [20]]}]
    assert dm.collate_predictions(batches) == [[0], [10], [20], [30], [40]]


def test_predict_without_training_files_or_checkpoint_says_what_to_do(tmp_path, capsys):
    new = tmp_path / "new"
    new.mkdir()
    (new / "test.raw.en").write_text("Five .\n")
    expect_user_error(capsys, ["fit", "--data.data_dir", str(new), *TINY], "training needs train_dev.raw.en")


def test_shared_tatoeba_corpus_is_read_whole():
    root = shared_data("hw5", "tatoeba-cmn")
    dm = TranslationDataModule(str(root), cache_dir=None)
    dm.setup("fit")
    assert len(dm.train.src) + len(dm.val.src) > 27000
    dm.check_test_labels()
    assert len(dm.test_references) == 1000
