"""The GPU check: each homework's default recipe, a bounded number of steps on one CUDA GPU.

For each homework (on its demo data, unless the course's data is in data/hwN), the default recipe trains
`--steps` optimizer steps twice, with the precision the project picks by itself (by the GPU's compute capability:
bf16-mixed from sm_80, 16-mixed on sm_70/75 and sm_60, docs/gpus.md) and with 32-true, and the check reports:

  - the GPU's name and compute capability, and the precision used, checked against docs/gpus.md's table;
  - whether every training loss was finite;
  - samples per second (HW5: target tokens per second) after `--warmup` steps, under each precision, and the
    speed-up of mixed precision over 32-true;
  - the peak GPU memory of the mixed-precision run;
  - HW4: inference utterances per second, batched by length (the project's `predict`) against one by one.

It runs through the Python API (`hwN.fit(...)`), so the runs are ordinary runs under a temporary folder, removed
at the end. On one modern GPU the whole check takes about 2-4 minutes (mostly start-up and the demo data being
written once). Without a CUDA GPU it prints one line and exits 0.

    python benchmarks/gpu_check.py                     # every homework, 40 steps each
    python benchmarks/gpu_check.py --homeworks hw3,hw4 --steps 60
"""
import argparse
import functools
import importlib
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from homework import registry  # noqa: E402

HOMEWORKS = tuple(registry.names())
#: each recipe as it is, only bounded: no validation beyond a few batches, no logger, no diagnosis
BOUNDED = {"trainer.logger": False, "diagnose": False, "trainer.enable_model_summary": False,
           "trainer.limit_val_batches": 2, "trainer.num_sanity_val_steps": 0}


def expected_precision(capability: tuple[int, int] | None) -> str:
    """What docs/gpus.md's table says a GPU of this compute capability gets (None: the CPU): bf16-mixed from sm_80,
    16-mixed on Volta/Turing (sm_70, sm_75) and the P100 (sm_60), else 32-true. Written out here, not asked of
    homework/cli/hardware.py: the check compares the project's choice with the documented one."""
    if capability is None:
        return "32-true"
    if capability[0] >= 8:
        return "bf16-mixed"
    return "16-mixed" if capability[0] == 7 or capability == (6, 0) else "32-true"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else math.nan


class Throughput(pl.Callback):
    """Samples (HW5: target tokens) per second over the training steps after the first `warmup`, every loss
    finite or not, and the peak GPU memory."""

    def __init__(self, warmup: int = 10) -> None:
        self.warmup = warmup
        self.samples, self.seconds, self.losses = 0, 0.0, []
        self._started = None
        self.weights_finite = False

    def on_train_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.warmup:
            synchronize()
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs  # (HW1's manual steps return none)
        if loss is not None:
            self.losses.append(float(loss.detach()))
        if self._started is not None:
            synchronize()
            self.seconds += time.perf_counter() - self._started
            self.samples += batch_size(batch)
            self._started = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if "train_loss" in trainer.callback_metrics:  # the epoch's mean training loss
            self.losses.append(float(trainer.callback_metrics["train_loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.weights_finite = all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds else math.nan


def batch_size(batch) -> int:
    """Samples in a training batch: its labels' length; HW5 (a dict of token tensors): the target tokens; HW1 (a
    list of minibatches, one Lightning step of several optimizer steps): all of theirs."""
    if isinstance(batch, list) and batch and isinstance(batch[0], (list, tuple)):
        return sum(batch_size(minibatch) for minibatch in batch)
    if isinstance(batch, dict):
        return int((batch["tgt_out"] != 0).sum()) if "tgt_out" in batch else len(next(iter(batch.values())))
    return len(batch[-1])


@dataclass
class Check:
    homework: str
    precision: str = ""
    finite: bool = False
    rate: float = math.nan  # samples/s (HW5: tokens/s) with the automatic precision
    rate_fp32: float = math.nan
    peak_mib: float = math.nan
    unit: str = "samples/s"
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.rate / self.rate_fp32 if self.rate_fp32 else math.nan


def fit(homework: str, steps: int, warmup: int, root: Path, precision: str | None,
        extra: dict | None = None) -> tuple[object, Throughput]:
    module = importlib.import_module(f"homework.{homework}")
    meter = Throughput(warmup)
    options = {**BOUNDED, "trainer.max_steps": steps, "trainer.default_root_dir": str(root / homework), **(extra or {})}
    if precision:
        options["trainer.precision"] = precision
    original = pl.Trainer.__init__

    @functools.wraps(original)  # (the same signature: LightningCLI reads the Trainer's options from it)
    def with_meter(self, *args, **kwargs):  # the meter joins the recipe's own callbacks
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), meter]
        original(self, *args, **kwargs)

    pl.Trainer.__init__ = with_meter
    try:
        result = module.fit(options, show_curve=False)
    finally:
        pl.Trainer.__init__ = original
    return result, meter


def check(homework: str, steps: int, warmup: int, root: Path, extra: dict | None = None) -> Check:
    found = Check(homework, unit="tokens/s" if homework == "hw5" else "samples/s")
    result, meter = fit(homework, steps, warmup, root, None, extra)
    found.precision = str(result.cli.trainer.precision)
    cuda = result.cli.trainer.strategy.root_device.type == "cuda"
    want = expected_precision(tuple(torch.cuda.get_device_capability()) if cuda else None)
    if found.precision != want:
        found.notes.append(f"precision {found.precision}, docs/gpus.md promises {want}")
    found.finite = bool(meter.losses) and all(math.isfinite(v) for v in meter.losses) and meter.weights_finite
    found.rate, found.peak_mib = meter.rate, peak_mib()
    _, fp32 = fit(homework, steps, warmup, root, "32-true", extra)
    found.rate_fp32 = fp32.rate
    if homework == "hw4":
        found.notes.append(inference(result, torch.device("cuda" if cuda else "cpu")))
    return found


def inference(result, device: torch.device) -> str:
    """HW4: utterances/s of the trained model on the test set, batched by length vs one by one."""
    cli = result.cli
    model, datamodule = cli.model.to(device).eval(), cli.datamodule
    datamodule.setup("predict")
    batches = list(datamodule.predict_dataloader())
    utterances = [u for b in batches for u in split(b)]

    mixed = device.type == "cuda"  # as trained: mixed precision on the GPU, 32-bit on the CPU
    dtype = torch.bfloat16 if mixed and torch.cuda.is_bf16_supported() else torch.float16

    def timed(inputs) -> float:
        synchronize()
        started = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=mixed):
            for batch in inputs:
                model.predict_step(to_device(batch, device), 0)
        synchronize()
        return len(utterances) / (time.perf_counter() - started)

    batched, single = timed(batches), timed(utterances)
    return (f"hw4 inference: {batched:,.0f} utterances/s batched by length, {single:,.0f} one by one "
            f"({batched / single:.1f}x), {len(utterances)} utterances")


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def split(batch) -> list:
    """A predict batch of HW4, (frames, padding mask), as batches of one utterance each, unpadded."""
    frames, padding = batch[:2]
    lengths = (~padding).sum(1)
    return [(frames[i:i + 1, :int(n)], padding[i:i + 1, :int(n)]) for i, n in enumerate(lengths)]


def format_table(checks: list[Check]) -> str:
    """The report: one row per homework, then the notes."""
    head = ("homework", "precision", "loss", "mixed /s", "32-true /s", "speed-up", "peak GPU")
    rows = [head]
    for c in checks:
        rows.append((c.homework, c.precision, "finite" if c.finite else "NOT FINITE",
                     f"{c.rate:,.0f} {c.unit.split('/')[0]}", f"{c.rate_fp32:,.0f}", f"{c.speedup:.2f}x",
                     f"{c.peak_mib:,.0f} MiB"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines += [f"note: {note}" for c in checks for note in c.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homeworks", default=",".join(HOMEWORKS), help="comma-separated, e.g. hw3,hw4")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per fit")
    parser.add_argument("--warmup", type=int, default=10, help="steps not timed (compilation, cuDNN autotuning)")
    parser.add_argument("--cpu", action="store_true", help="run the same check on the CPU (tests the script itself; "
                                                           "the figures mean little)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="another option for every fit, e.g. --option model.d_model=32 (repeatable)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu:
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}), nothing to check")
        return 0
    homeworks = [h.strip() for h in args.homeworks.split(",") if h.strip()]
    unknown = sorted(set(homeworks) - set(HOMEWORKS))
    if unknown or args.steps <= args.warmup:
        parser.error(f"unknown homework {unknown}" if unknown else "--steps must exceed --warmup")
    extra = dict(o.split("=", 1) for o in args.option)
    if args.cpu:
        extra["trainer.accelerator"] = "cpu"
    if args.cpu:
        device = "the CPU"
    else:
        major, minor = torch.cuda.get_device_capability()
        device = f"{torch.cuda.get_device_name()} (sm_{major}{minor}, expecting {expected_precision((major, minor))})"
    print(f"gpu_check on {device} (torch {torch.__version__}, {args.steps} steps, {args.warmup} untimed)", flush=True)
    started, checks = time.perf_counter(), []
    root = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        for homework in homeworks:
            try:
                checks.append(check(homework, args.steps, args.warmup, root, extra))
            except Exception as err:  # (the next homework is still checked; the exit code says it failed)
                checks.append(Check(homework, notes=[f"{homework} FAILED: {type(err).__name__}: {err}"]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n" + format_table(checks))
    print(f"({time.perf_counter() - started:.0f} s in all)")
    failed = [c.homework for c in checks if not c.finite or any("promises" in n or "FAILED" in n for n in c.notes)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
