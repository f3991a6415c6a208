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
