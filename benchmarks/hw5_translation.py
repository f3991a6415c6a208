"""HW5 on a real corpus for a fixed wall-clock budget: the default Transformer recipe (hw5.yaml) against
the course's sample model (hw5_sample.yaml, an RNN seq2seq), trained one after the other through the
homework's own CLI with the same budget, threads and data, then scored on the test set's real
references with sacrebleu (Chinese tokenization), decoding greedily and with beam search.

Reported per recipe: epochs and optimizer steps done in the budget, training speed in target tokens
per second (training steps only, validation excluded), best val_bleu, test BLEU (greedy / beam),
and decoding speed in sentences per second (greedy / beam), plus the ratios between the recipes.

    python benchmarks/hw5_translation.py [--data ../shared/data/hw5/tatoeba-cmn] [--minutes 20] [--threads 1]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from datamodules.translation import TranslationDataModule
from homework.hw5 import main
from models.translation import Translator, corpus_bleu

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"transformer (hw5.yaml)": [],
           "rnn sample (hw5_sample.yaml)": ["--config", str(ROOT / "homework/configs/hw5_sample.yaml")]}


class TrainSpeed(pl.Callback):
    """Target tokens and seconds spent in training steps (data loading included, validation not)."""

    def __init__(self) -> None:
        self.tokens, self.seconds, self.steps, self._start = 0, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._start
        self.tokens += int(batch["tgt_out"].ne(0).sum())
        self.steps += 1


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def decode_test(model: Translator, datamodule: TranslationDataModule, beam_size: int) -> tuple[float, float]:
    """Test BLEU against the real references and sentences per second, for one beam size."""
    hypotheses: dict[int, list[int]] = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in datamodule.test_dataloader():
            hypotheses.update(zip(batch["index"].tolist(), model.translate(batch["src"], beam_size)))
    seconds = time.perf_counter() - start
    texts = datamodule.detokenize([hypotheses[i] for i in range(len(hypotheses))])
    return corpus_bleu(texts, datamodule.test_references), len(texts) / seconds


def run(name: str, extra: list[str], args: argparse.Namespace, workdir: Path) -> dict:
    print(f"\n=== {name}: training for {args.minutes} min (load average {load()}) ===", flush=True)
    cli_args = ["fit", *extra, "--data.data_dir", str(args.data), "--data.cache_dir", str(workdir / "cache"),
                "--trainer.default_root_dir", str(workdir / "runs" / name.split()[0]),
                "--trainer.max_epochs", "1000", "--trainer.max_time", f"00:00:{args.minutes:02d}:00",
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                "--torch_num_threads", str(args.threads), "--trainer.precision", args.precision, *args.extra]
    start = time.perf_counter()
    cli = main([*cli_args, "--trainer.callbacks+=__main__.TrainSpeed"])
    wall = time.perf_counter() - start
    speed = next(c for c in cli.trainer.callbacks if isinstance(c, TrainSpeed))
    ckpt = cli.trainer.checkpoint_callback
    model = Translator.load_from_checkpoint(ckpt.best_model_path, map_location="cpu").eval()
    datamodule = cli.datamodule
    row = {"recipe": name, "params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
           "epochs": cli.trainer.current_epoch, "steps": cli.trainer.global_step, "fit wall (s)": wall,
           "train tok/s": speed.tokens / max(speed.seconds, 1e-9), "best val_bleu": float(ckpt.best_model_score),
           "load after fit": load()}
    for beam in (1, args.beam):
        bleu, rate = decode_test(model, datamodule, beam)
        row[f"test BLEU beam {beam}"], row[f"sent/s beam {beam}"] = bleu, rate
    print(row, flush=True)
    return row


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/hw5/tatoeba-cmn")
    parser.add_argument("--minutes", type=int, default=20, help="training budget per recipe (wall clock)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CPU is shared: 1 is sensible)")
    parser.add_argument("--precision", default="bf16-mixed",
                        help="trainer precision: bf16-mixed trains ~2x faster than 32-true on CPUs with AVX512-BF16")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("extra", nargs="*", help="more CLI flags for both recipes, after --")
    args = parser.parse_args()
    if not (args.data / "test.raw.zh").is_file():
        raise SystemExit(f"no corpus with test references at {args.data}")
    os.environ.setdefault("WANDB_MODE", "disabled")
    workdir = Path(tempfile.mkdtemp(prefix="hw5_bench_"))
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.precision}, "
          f"budget {args.minutes} min per recipe, "
          f"corpus {args.data}, work dir {workdir}")
    try:
        rows = [run(name, RECIPES[name], args, workdir) for name in args.recipes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nuptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    columns = list(rows[0])
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    if len(rows) == 2:
        (a, b), beam = rows, f"test BLEU beam {args.beam}"
        print(f"\nratios {a['recipe']} / {b['recipe']}: train tok/s {a['train tok/s'] / b['train tok/s']:.2f}x, "
              f"test BLEU (beam {args.beam}) {a[beam] / max(b[beam], 1e-9):.2f}x, "
              f"greedy sent/s {a['sent/s beam 1'] / b['sent/s beam 1']:.2f}x, "
              f"beam sent/s {a[f'sent/s beam {args.beam}'] / b[f'sent/s beam {args.beam}']:.2f}x")


if __name__ == "__main__":
    main_benchmark()
