"""HW4 speed and memory on a full-size-like set, side by side with the course's sample code in one run.

Generates (under /tmp, deleted at the end) 600 speakers and 56,666 training + 8,000 test utterances of
realistic lengths (200-1500 frames, skewed to shorter ones) as `uttr-*.pt` files in the real `Dataset/`
layout, then reports:
  1. first pack of all features into the memory-mapped float16 cache: time, peak memory;
  2. cached load in a fresh process (what every later run pays): time, peak memory;
  3. training batches: ours (one gather per batch from the cache) vs the sample's Dataset
     (`torch.load` per utterance, random crop, `pad_sequence`), batches/s;
  4. training utterances/s of both recipes through Lightning vs the sample's plain PyTorch loop;
  5. inference utterances/s: ours (whole utterances sorted by length, batched with padding masks)
     vs the sample's one-by-one (`torch.load` + batch size 1), same network.
Each stage runs in a freshly spawned process (peak memory = its max RSS) with one torch thread; the
machine load (`uptime`) is printed with every timing.

    python benchmarks/hw4_speaker.py                      # full size (~6 GB of files under /tmp)
    python benchmarks/hw4_speaker.py --utterances 5000 --test 1000   # a quicker look
"""

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pad_sequence  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

N_MELS = 40


def load() -> str:
    return "load " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mel_lengths(count: int, rng: np.random.Generator) -> np.ndarray:
    """200 + Gamma(2, 180) frames, capped at 1500: most utterances 300-700 frames, a long tail."""
    return np.minimum(200 + rng.gamma(2.0, 180.0, count), 1500).astype(int)


def generate(root: Path, speakers: int, utterances: int, test: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    names = [f"id{10001 + k:05d}" for k in range(speakers)]
    lengths = mel_lengths(utterances + test, rng)
    owner = rng.integers(0, speakers, utterances)
    entries = []
    for k, length in enumerate(lengths):
        path = f"uttr-{rng.integers(16**12):012x}{k:06d}.pt"
        torch.save(torch.from_numpy(rng.standard_normal((int(length), N_MELS), dtype=np.float32)), root / path)
        entries.append({"feature_path": path, "mel_len": int(length)})
    metadata = {}
    for entry, speaker in zip(entries[:utterances], owner):
        metadata.setdefault(names[speaker], []).append(entry)
    (root / "mapping.json").write_text(json.dumps({"speaker2id": {n: k for k, n in enumerate(names)},
                                                   "id2speaker": {str(k): n for k, n in enumerate(names)}}))
    (root / "metadata.json").write_text(json.dumps({"n_mels": N_MELS, "speakers": metadata}))
    (root / "testdata.json").write_text(json.dumps({"n_mels": N_MELS, "utterances": entries[utterances:]}))


# --- the course's sample code (ML2022 HW4), verbatim but for names ----------------------------------
class SampleDataset(Dataset):
    def __init__(self, data_dir, segment_len=128):
        self.data_dir = data_dir
        self.segment_len = segment_len
        mapping = json.load((Path(data_dir) / "mapping.json").open())
        self.speaker2id = mapping["speaker2id"]
        metadata = json.load(open(Path(data_dir) / "metadata.json"))["speakers"]
        self.data = []
        for speaker in metadata.keys():
            for utterances in metadata[speaker]:
                self.data.append([utterances["feature_path"], self.speaker2id[speaker]])

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        feat_path, speaker = self.data[index]
        mel = torch.load(os.path.join(self.data_dir, feat_path))
        if len(mel) > self.segment_len:
            start = random.randint(0, len(mel) - self.segment_len)
            mel = torch.FloatTensor(mel[start:start + self.segment_len])
        else:
            mel = torch.FloatTensor(mel)
        speaker = torch.FloatTensor([speaker]).long()
        return mel, speaker


def collate_batch(batch):
    mel, speaker = zip(*batch)
    mel = pad_sequence(mel, batch_first=True, padding_value=-20)
    return mel, torch.FloatTensor(speaker).long()


class SampleClassifier(nn.Module):
    def __init__(self, d_model=80, n_spks=600, dropout=0.1):
        super().__init__()
        self.prenet = nn.Linear(40, d_model)
        self.encoder_layer = nn.TransformerEncoderLayer(d_model=d_model, dim_feedforward=256, nhead=2)
        self.pred_layer = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, n_spks))

    def forward(self, mels):
        out = self.prenet(mels)
        out = out.permute(1, 0, 2)
        out = self.encoder_layer(out)
        out = out.transpose(0, 1)
        stats = out.mean(dim=1)
        return self.pred_layer(stats)


# --- stages (each in its own process) -------------------------------------------------------------
def recipe(name: str, num_speakers: int):
    """(model kwargs, optimizer lr) of a shipped config."""
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "homework" / "configs" / name).read_text())
    model = {k: v for k, v in config["model"].items() if k not in ("optimizer", "lr_scheduler")}
    return {**model, "num_speakers": num_speakers}, config["model"]["optimizer"]["init_args"]["lr"]


def datamodule(root: Path):
    from datamodules.voxceleb import VoxCelebDataModule

    return VoxCelebDataModule(str(root), batch_size=32)


def stage_pack(root: Path, queue) -> None:
    start = time.perf_counter()
    dm = datamodule(root)
    dm.setup("fit")
    dm.check_test_data()
    queue.put({"seconds": time.perf_counter() - start, "peak_mib": peak_mib(), "load": load(),
               "frames": dm.train_packed.num_rows + dm.test_packed.num_rows,
               "cache_mib": sum(f.stat().st_size for f in (root / ".cache").rglob("*")) / 2**20})


def stage_cached(root: Path, queue) -> None:
    start = time.perf_counter()
    dm = datamodule(root)
    dm.setup("fit")
    dm.check_test_data()
    queue.put({"seconds": time.perf_counter() - start, "peak_mib": peak_mib(), "load": load()})


def stage_batches(root: Path, queue, batches: int) -> None:
    dm = datamodule(root)
    dm.setup("fit")
    ours = iter(dm.train_dataloader())
    start = time.perf_counter()
    for _ in range(batches):
        next(ours)
    ours_s = time.perf_counter() - start
    sample = iter(DataLoader(SampleDataset(str(root)), batch_size=32, shuffle=True, collate_fn=collate_batch))
    start = time.perf_counter()
    for _ in range(batches):
        next(sample)
    queue.put({"ours": batches / ours_s, "sample": batches / (time.perf_counter() - start),
               "peak_mib": peak_mib(), "load": load()})


def stage_train(root: Path, queue, config: str, steps: int) -> None:
    import pytorch_lightning as pl

    from callbacks import WarmupCosineLR
    from models.speaker import SpeakerClassifier

    dm = datamodule(root)
    dm.setup("fit")
    kwargs, lr = recipe(config, dm.num_speakers)
    torch.manual_seed(0)
    model = SpeakerClassifier(**kwargs, optimizer=lambda p: torch.optim.AdamW(p, lr=lr),
                              lr_scheduler=lambda o: WarmupCosineLR(o, 1000, 70000))
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    result = {"ours": steps * dm.batch_size / (time.perf_counter() - start), "load": load()}
    if config == "hw4_sample.yaml":  # the sample's own loop on its own Dataset, same network and batch
        model = SampleClassifier(n_spks=dm.num_speakers)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / 1000)
        loader = DataLoader(SampleDataset(str(root)), batch_size=32, shuffle=True, collate_fn=collate_batch)
        criterion = nn.CrossEntropyLoss()
        start = time.perf_counter()
        for _, (mels, labels) in zip(range(steps), loader):
            loss = criterion(model(mels), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        result["sample"] = steps * 32 / (time.perf_counter() - start)
    result["peak_mib"] = peak_mib()
    queue.put(result)


def stage_infer(root: Path, queue, config: str, count: int) -> None:
    from datamodules.voxceleb import pad_crops
    from models.speaker import SpeakerClassifier

    dm = datamodule(root)
    dm.check_test_data()
    kwargs, _ = recipe(config, dm.num_speakers)
    torch.manual_seed(0)
    model = SpeakerClassifier(**kwargs).eval()
    packed = dm.test_packed
    lengths = packed.lengths[:count]
    with torch.no_grad():
        start = time.perf_counter()
        probs = []
        for batch in dm.sorted_batches(lengths):
            probs.append(model(*pad_crops(packed.data, packed.offsets, batch, None)).softmax(-1))
        ours = count / (time.perf_counter() - start)
        start = time.perf_counter()  # the sample's way: each file loaded and run alone
        for path, _ in dm.files.test[:count]:
            model(torch.load(root / path)[None]).argmax(-1)
        one_by_one = count / (time.perf_counter() - start)
    queue.put({"ours": ours, "sample": one_by_one, "mean_frames": float(lengths.float().mean()),
               "peak_mib": peak_mib(), "load": load()})


def _in_child(target, *args) -> None:
    torch.set_num_threads(1)  # a shared 2-core machine: see homework/cli/hardware.py
    target(*args)


def run_stage(target, *args) -> dict:
    context = mp.get_context("spawn")  # a fresh process: its peak memory is its own
    queue = context.Queue()
    process = context.Process(target=_in_child, args=(target, *args[:1], queue, *args[1:]))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=600)
    parser.add_argument("--utterances", type=int, default=56_666)
    parser.add_argument("--test", type=int, default=8_000)
    parser.add_argument("--batches", type=int, default=100, help="training batches timed for data loading")
    parser.add_argument("--steps", type=int, default=30, help="training steps timed per recipe")
    parser.add_argument("--infer", type=int, default=300, help="test utterances timed for inference")
    parser.add_argument("--dir", default=None, help="where to generate (default: a new folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hw4-bench-", dir="/tmp"))
    root = workdir / "Dataset"
    try:
        start = time.perf_counter()
        generate(root, args.speakers, args.utterances, args.test)
        size = sum(f.stat().st_size for f in root.iterdir()) / 2**30
        print(f"generated {args.utterances:,} + {args.test:,} utterances of {args.speakers} speakers "
              f"({size:.1f} GiB) in {time.perf_counter() - start:.0f} s", flush=True)
        r = run_stage(stage_pack, root)
        print(f"first pack:  {r['seconds']:6.1f} s   peak {r['peak_mib']:6.0f} MiB   "
              f"({r['frames']:,} frames, cache {r['cache_mib']:.0f} MiB)   [{r['load']}]", flush=True)
        r = run_stage(stage_cached, root)
        print(f"cached load: {r['seconds']:6.1f} s   peak {r['peak_mib']:6.0f} MiB   [{r['load']}]", flush=True)
        r = run_stage(stage_batches, root, args.batches)
        print(f"training batches/s: ours {r['ours']:.1f}, sample Dataset {r['sample']:.1f} "
              f"({r['ours'] / r['sample']:.1f}x)   peak {r['peak_mib']:.0f} MiB   [{r['load']}]", flush=True)
        for config in ("hw4_sample.yaml", "hw4.yaml"):
            r = run_stage(stage_train, root, config, args.steps)
            versus = f", sample loop {r['sample']:.0f} ({r['ours'] / r['sample']:.2f}x)" if "sample" in r else ""
            print(f"training utterances/s, {config}: ours (Lightning) {r['ours']:.0f}{versus}   "
                  f"peak {r['peak_mib']:.0f} MiB   [{r['load']}]", flush=True)
        for config in ("hw4_sample.yaml", "hw4.yaml"):
            r = run_stage(stage_infer, root, config, args.infer)
            print(f"inference utterances/s, {config} ({r['mean_frames']:.0f} frames on average): batched "
                  f"{r['ours']:.0f}, one by one {r['sample']:.0f} ({r['ours'] / r['sample']:.1f}x)   "
                  f"peak {r['peak_mib']:.0f} MiB   [{r['load']}]", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
