"""HW2 memory and load time: LibriPhoneDataModule (packed float16 frames, windows gathered per batch)
vs the course's sample code (every window materialised by `concat_feat` into one big tensor).

Writes a full-size ML2022-like libriphone set (4286 + 1078 utterances, ~2.64 M + 0.65 M frames of
(T, 39) float32 `.pt` files, ~500 MB) under /tmp, then measures each side in its own subprocess:
- peak resident memory (`resource.getrusage`) of loading the training + validation data at
  `concat_nframes` 1, 11 and 51 (the sample's `preprocess_data` for 'train' and 'val'; here the
  DataModule's setup plus the windows of every validation batch). The sample at 51 would need ~24 GB:
  it is measured on two fractions of the utterances and extrapolated linearly (said so in the output);
- first load (packing the files into the cache) and cached load times;
- training frames/s of the default recipe (hw2.yaml) and of the sample recipe (hw2_sample.yaml)
  through Lightning, next to the sample's plain PyTorch loop on the same MLP.

    python benchmarks/hw2_memory.py [--scale 1.0] [--steps 30] [--mlp_steps 400] [--repeats 3] [--dir /tmp/x]
                                    [--keep] [--parts load memory train]

Keep other memory-hungry work off the machine while it runs: the sample at 11 frames takes ~5 GB.
"""
import argparse
import gc
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_UTTERANCES, TEST_UTTERANCES = 4286, 1078
TRAIN_FRAMES, TEST_FRAMES = 2_644_158, 646_268  # ML2022's totals


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the data -------------------------------------------------------------------------------------
def write_set(root: Path, scale: float, seed: int = 0) -> tuple[int, int]:
    """ML2022-shaped libriphone files: random lengths with the real totals, random features and labels."""
    import numpy as np
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    totals = {}
    label_lines = []
    for split, count, frames in (("train", TRAIN_UTTERANCES, TRAIN_FRAMES), ("test", TEST_UTTERANCES, TEST_FRAMES)):
        count = max(2, int(count * scale))
        lengths = rng.integers(200, 1000, count)
        lengths = np.maximum(1, (lengths * (frames * scale / lengths.sum()))).astype(int)
        (root / "feat" / split).mkdir(parents=True, exist_ok=True)
        ids = [f"{rng.integers(19, 9000)}-{rng.integers(100, 200000)}-{k:04d}" for k in range(count)]
        for utterance, length in tqdm(list(zip(ids, lengths)), desc=f"writing {split}", leave=False):
            torch.save(torch.from_numpy(rng.standard_normal((length, 39), dtype=np.float32)),
                       root / "feat" / split / f"{utterance}.pt")
            if split == "train":
                label_lines.append(" ".join([utterance, *map(str, rng.integers(0, 41, length))]))
        (root / f"{split}_split.txt").write_text("\n".join(ids) + "\n")
        totals[split] = int(lengths.sum())
    (root / "train_labels.txt").write_text("\n".join(label_lines) + "\n")
    return totals["train"], totals["test"]


# --- the sample code (ML2022 HW2), verbatim where it matters ------------------------------------------
def load_feat(path):
    import torch
    return torch.load(path)


def shift(x, n):
    import torch
    if n < 0:
        left = x[0].repeat(-n, 1)
        right = x[:n]
    elif n > 0:
        right = x[-1].repeat(n, 1)
        left = x[n:]
    else:
        return x
    return torch.cat((left, right), dim=0)


def concat_feat(x, concat_n):
    assert concat_n % 2 == 1  # n must be odd
    if concat_n < 2:
        return x
    seq_len, feature_dim = x.size(0), x.size(1)
    x = x.repeat(1, concat_n)
    x = x.view(seq_len, concat_n, feature_dim).permute(1, 0, 2)  # concat_n, seq_len, feature_dim
    mid = (concat_n // 2)
    for r_idx in range(1, mid + 1):
        x[mid + r_idx, :] = shift(x[mid + r_idx], r_idx)
        x[mid - r_idx, :] = shift(x[mid - r_idx], -r_idx)
    return x.permute(1, 0, 2).view(seq_len, concat_n * feature_dim)


def preprocess_data(split, feat_dir, phone_path, concat_nframes, train_ratio=0.8, train_val_seed=1337,
                    fraction=1.0):
    """The sample's function; `fraction` (benchmark only) keeps that share of the split's utterances."""
    import torch
    mode = 'train' if (split == 'train' or split == 'val') else 'test'
    label_dict = {}
    if mode != 'test':
        phone_file = open(os.path.join(phone_path, f'{mode}_labels.txt')).readlines()
        for line in phone_file:
            line = line.strip('\n').split(' ')
            label_dict[line[0]] = [int(p) for p in line[1:]]
    usage_list = open(os.path.join(phone_path, f'{mode}_split.txt')).readlines()
    if mode == 'train':
        random.seed(train_val_seed)
        random.shuffle(usage_list)
        percent = int(len(usage_list) * train_ratio)
        usage_list = usage_list[:percent] if split == 'train' else usage_list[percent:]
    usage_list = [line.strip('\n') for line in usage_list]
    usage_list = usage_list[:max(1, int(len(usage_list) * fraction))]
    max_len = 3000000
    X = torch.empty(max_len, 39 * concat_nframes)
    if mode != 'test':
        y = torch.empty(max_len, dtype=torch.long)
    idx = 0
    for i, fname in enumerate(usage_list):
        feat = load_feat(os.path.join(feat_dir, mode, f'{fname}.pt'))
        cur_len = len(feat)
        feat = concat_feat(feat, concat_nframes)
        if mode != 'test':
            label = torch.LongTensor(label_dict[fname])
        X[idx: idx + cur_len, :] = feat
        if mode != 'test':
            y[idx: idx + cur_len] = label
        idx += cur_len
    X = X[:idx, :]
    if mode != 'test':
        y = y[:idx]
        return X, y
    return X


def sample_load(root: Path, nframes: int, fraction: float) -> dict:
    start = time.perf_counter()
    data = [preprocess_data(split, str(root / "feat"), str(root), nframes, fraction=fraction)
            for split in ("train", "val")]
    return {"load_s": time.perf_counter() - start, "frames": sum(len(x) for x, _ in data)}


def sample_train(root: Path, steps: int) -> dict:
    """The sample's training loop (concat 1, its Classifier, AdamW 1e-4, batch 512): frames/s over `steps` batches."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class LibriDataset(Dataset):
        def __init__(self, X, y=None):
            self.data, self.label = X, y

        def __getitem__(self, idx):
            return self.data[idx], self.label[idx]

        def __len__(self):
            return len(self.data)

    def block(i, o):
        return nn.Sequential(nn.Linear(i, o), nn.ReLU())

    torch.set_num_threads(1)  # as both recipes (torch_num_threads: 1): 2 threads were ~8x slower on a busy CPU
    X, y = preprocess_data("train", str(root / "feat"), str(root), 1)
    loader = DataLoader(LibriDataset(X, y), batch_size=512, shuffle=True)
    model = nn.Sequential(block(39, 256), block(256, 256), nn.Linear(256, 41))
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for i, (features, labels) in enumerate(loader):
        if i == 5:
            start = time.perf_counter()
        optimizer.zero_grad()
        outputs = model(features)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        _, train_pred = torch.max(outputs, 1)
        (train_pred.detach() == labels.detach()).sum().item()  # the sample's accuracy bookkeeping
        if i == 5 + steps:
            break
    return {"frames_per_s": steps * 512 / (time.perf_counter() - start)}


# --- this framework -------------------------------------------------------------------------------
def ours_load(root: Path, nframes: int, cache_dir: Path) -> dict:
    from datamodules.libriphone import LibriPhoneDataModule
    start = time.perf_counter()
    dm = LibriPhoneDataModule(str(root), concat_nframes=nframes, cache_dir=str(cache_dir))
    dm.setup("fit")
    dm.check_test_data()  # `fit` packs and checks the test files too, before training
    load = time.perf_counter() - start
    count = 0
    for batch in dm.val_dataloader():  # every validation window, gathered batch by batch
        x, _ = dm.gather(batch)
        count += len(x)
    return {"load_s": load, "frames": len(dm.train_rows) + len(dm.val_rows), "windows_gathered": count}


class StepTimer:
    """Times training steps after a warm-up (a Lightning callback, built lazily to keep imports in the child)."""

    @staticmethod
    def make(warmup: int):
        from pytorch_lightning import Callback

        class Timer(Callback):
            def __init__(self):
                self.start, self.steps = None, 0

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == warmup:
                    self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if batch_idx >= warmup:
                    self.steps += 1
                    self.end = time.perf_counter()

        return Timer()


def ours_train(root: Path, recipe: str, steps: int, cache_dir: Path) -> dict:
    """The recipe's model and data (as in its YAML) on a bare Lightning Trainer: frames/s over `steps` steps."""
    import importlib
    from functools import partial

    import torch
    import yaml
    from pytorch_lightning import Trainer, seed_everything

    from datamodules.libriphone import LibriPhoneDataModule
    from models.phoneme import PhonemeClassifier

    config = yaml.safe_load((ROOT / "homework" / "configs" / recipe).read_text())
    model_args, data_args = dict(config["model"]), dict(config["data"])
    optimizer = model_args.pop("optimizer")
    model_args.pop("lr_scheduler", None)  # the schedule does not change the step's cost
    module, name = optimizer["class_path"].rsplit(".", 1)
    if config.get("torch_num_threads"):
        torch.set_num_threads(config["torch_num_threads"])
    seed_everything(0, verbose=False)
    data = LibriPhoneDataModule(str(root), cache_dir=str(cache_dir),
                                **{k: v for k, v in data_args.items() if k in ("concat_nframes", "batch_size")})
    model = PhonemeClassifier(data.num_classes, data.feature_dim, data.concat_nframes, **model_args,
                              optimizer=partial(getattr(importlib.import_module(module), name),
                                                **optimizer["init_args"]))
    timer = StepTimer.make(warmup=3)
    trainer = Trainer(max_steps=steps + 3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, data)
    return {"frames_per_s": timer.steps * data.batch_size / (timer.end - timer.start),
            "concat_nframes": data.concat_nframes, "net": model_args["net"]}


def child(args) -> None:
    root = Path(args.dir) / "libriphone"
    cache = Path(args.dir) / "cache"
    if args.child == "sample-load":
        result = sample_load(root, args.nframes, args.fraction)
    elif args.child == "sample-train":
        result = sample_train(root, args.steps)
    elif args.child == "ours-load":
        result = ours_load(root, args.nframes, cache)
    else:
        result = ours_train(root, args.recipe, args.steps, cache)
    gc.collect()
    print("RESULT " + json.dumps({**result, "peak_rss_mb": peak_rss_mb()}), flush=True)


def run_child(directory: Path, kind: str, **options) -> dict:
    command = [sys.executable, __file__, "--dir", str(directory), "--child", kind]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{kind} {options} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def memory(directory: Path, fractions: tuple[float, float]) -> None:
    """Peak memory of loading the data at 1, 11 and 51 frames per window (a cache made first, if none)."""
    print(f"\n{'peak memory (MB)':20s} {'sample':>10s} {'here':>8s} {'sample/here':>12s}   sample load")
    sample, ours = {}, {}
    for nframes in (1, 11, 51):
        ours[nframes] = run_child(directory, "ours-load", nframes=nframes)
        if nframes < 51:
            sample[nframes] = run_child(directory, "sample-load", nframes=nframes)
            note = f"{sample[nframes]['load_s']:.0f} s"
        else:  # ~24 GB: measure two fractions of the utterances, extrapolate the line to all of them
            low, high = (run_child(directory, "sample-load", nframes=nframes, fraction=f) for f in fractions)
            slope = (high["peak_rss_mb"] - low["peak_rss_mb"]) / (high["frames"] - low["frames"])
            frames = ours[nframes]["frames"]
            sample[nframes] = {"peak_rss_mb": high["peak_rss_mb"] + slope * (frames - high["frames"]),
                               "load_s": high["load_s"] * frames / high["frames"]}
            note = (f"~{sample[nframes]['load_s']:.0f} s  EXTRAPOLATED linearly from {low['frames']:,} and "
                    f"{high['frames']:,} frames ({low['peak_rss_mb']:.0f} / {high['peak_rss_mb']:.0f} MB)")
        s, o = sample[nframes]["peak_rss_mb"], ours[nframes]["peak_rss_mb"]
        print(f"concat_nframes {nframes:<5d} {s:10.0f} {o:8.0f} {s / o:11.1f}x   {note}")
    print(f"peak at 51 / peak at 1: sample {sample[51]['peak_rss_mb'] / sample[1]['peak_rss_mb']:.1f}x, "
          f"here {ours[51]['peak_rss_mb'] / ours[1]['peak_rss_mb']:.2f}x")


def training(directory: Path, steps: int, mlp_steps: int, repeats: int) -> None:
    """Training frames/s of the sample's plain loop and of both recipes through Lightning: the MLP pair
    `repeats` times, interleaved (fastest kept: a busy machine only ever slows a run down)."""
    print(f"\n{'training frames/s (CPU, 1 thread)':44s} {'frames/s':>9s}")
    plain, ours = [], []
    for _ in range(repeats):
        plain.append(run_child(directory, "sample-train", steps=mlp_steps)["frames_per_s"])
        ours.append(run_child(directory, "ours-train", recipe="hw2_sample.yaml", steps=mlp_steps)["frames_per_s"])
    runs = f"fastest of {repeats} x {mlp_steps} steps"
    print(f"{'sample code: plain loop, MLP, 1 frame':44s} {max(plain):9.0f}  ({runs}; all: "
          f"{', '.join(f'{v:.0f}' for v in plain)})")
    print(f"{'hw2_sample.yaml: the same MLP, 1 frame':44s} {max(ours):9.0f}  ({max(ours) / max(plain):.2f}x the plain "
          f"loop; all: {', '.join(f'{v:.0f}' for v in ours)})")
    result = run_child(directory, "ours-train", recipe="hw2.yaml", steps=steps)
    label = f"hw2.yaml: {result['net']}, {result['concat_nframes']} frames"
    print(f"{label:44s} {result['frames_per_s']:9.0f}  ({steps} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the full-size set to generate")
    parser.add_argument("--steps", type=int, default=30, help="training steps timed for the default recipe")
    parser.add_argument("--mlp_steps", type=int, default=400, help="training steps timed for the sample's MLP")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of the MLP pair")
    parser.add_argument("--fractions", type=float, nargs=2, default=(0.05, 0.1),
                        help="shares of the utterances the sample is measured on at 51 frames")
    parser.add_argument("--dir", help="where to write the set, or a set kept by --keep (default: a new folder "
                                      "under /tmp, deleted after)")
    parser.add_argument("--keep", action="store_true", help="keep the generated set")
    parser.add_argument("--parts", nargs="+", choices=("load", "memory", "train"), default=("load", "memory", "train"),
                        help="which measurements to run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--nframes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="hw2.yaml", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    directory = Path(args.dir or tempfile.mkdtemp(prefix="hw2_bench_", dir="/tmp"))
    try:
        start = time.perf_counter()
        if (directory / "libriphone" / "train_labels.txt").exists():  # kept from an earlier --keep run
            print(f"Using the set in {directory}")
        else:
            train_frames, test_frames = write_set(directory / "libriphone", args.scale)
            print(f"Generated {train_frames:,} training + {test_frames:,} test frames "
                  f"({int(TRAIN_UTTERANCES * args.scale)} + {int(TEST_UTTERANCES * args.scale)} utterances) "
                  f"in {directory} ({time.perf_counter() - start:.0f} s)")
        print(f"load average {os.getloadavg()[0]:.1f}\n")

        if "load" in args.parts:
            first = run_child(directory, "ours-load", nframes=1)
            cached = run_child(directory, "ours-load", nframes=1)
            print(f"{'load (train + val + test)':34s} {'first':>9s} {'cached':>9s}")
            print(f"{'this framework (packs the files)':34s} {first['load_s']:8.1f}s {cached['load_s']:8.1f}s")
        if "memory" in args.parts:
            memory(directory, args.fractions)
        if "train" in args.parts:
            training(directory, args.steps, args.mlp_steps, args.repeats)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} "
              f"(2 cores: above ~1 the timings are slowed by others)")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
