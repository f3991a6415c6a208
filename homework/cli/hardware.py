"""Settings that depend on the machine: mixed precision on GPUs, CPU threads beside the data workers."""

import logging

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.accelerators import CPUAccelerator

from datamodules.base import available_cpus

log = logging.getLogger(__name__)


def auto_precision() -> str:
    """bf16-mixed on GPUs that support it, 16-mixed on other CUDA GPUs, 32-true on the CPU."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def set_cpu_threads(trainer: Trainer, num_workers: int, threads: int | None) -> None:
    """On the CPU, leave the data loader workers their cores: oversubscribed OpenMP threads
    spin-wait on each other (on a busy 2-core machine, 2 threads trained a CNN over 10x slower than 1).
    `threads` given: use exactly that many."""
    if threads is None:
        if not num_workers or not isinstance(trainer.accelerator, CPUAccelerator):
            return
        threads = max(1, available_cpus() - num_workers)
    if torch.get_num_threads() != threads:
        log.info("torch uses %d CPU thread(s) per op", threads)
        torch.set_num_threads(threads)


#: the Trainer's options that say which machine, and their defaults (not repeated in an error)
MACHINE_OPTIONS = {"accelerator": "auto", "devices": "auto", "strategy": "auto", "num_nodes": 1}


def refused(error: Exception, trainer: dict) -> str:
    """One line for options the Trainer refused, e.g. `--trainer.accelerator gpu` where there is no GPU: the
    options as given, Lightning's reason, and where no CUDA GPU is there, what takes one when there is."""
    given = " ".join(f"--trainer.{name} {trainer.get(name)}" for name, default in MACHINE_OPTIONS.items()
                     if trainer.get(name) not in (None, default))
    reason = " ".join(str(error).split())
    line = f"{given or 'the Trainer options'}: {reason}"
    asked = str(trainer.get("accelerator")).lower()
    if asked in ("gpu", "cuda") and not torch.cuda.is_available():
        line += (" (this machine has no CUDA GPU; leave --trainer.accelerator at auto, which takes a GPU where "
                 "there is one)")
    return line
