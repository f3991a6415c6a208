"""Settings that depend on the machine: the precision a GPU trains fastest in, how many GPUs a fit takes, CPU
threads beside the data workers, and the one line that says what was chosen (docs/gpus.md)."""

import logging
import os

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.accelerators import CPUAccelerator

import adapters
from datamodules.base import available_cpus

log = logging.getLogger(__name__)

#: slower to faster: under several devices the slowest one's choice is everyone's (one precision per run)
RANK = ("32-true", "16-mixed", "bf16-mixed")


def precision_for(capability: tuple[int, int]) -> tuple[str, str]:
    """The precision a GPU of this compute capability trains fastest in, and why.

    Read from the capability, not from `torch.cuda.is_bf16_supported()`: that says True on a T4, V100 or P100
    too, counting bf16 emulated in software (slower than fp32, and cuDNN has no bf16 convolutions below sm_80),
    so a CNN may not run at all there."""
    major, minor = capability
    if major >= 8:  # Ampere and newer (A100, L4, RTX 30xx/40xx, H100): bf16 tensor cores, no gradient scaler
        return "bf16-mixed", "bf16 tensor cores (no gradient scaler needed)"
    if major == 7:  # Volta, Turing (V100, T4): fp16 tensor cores (a T4: ~65 TFLOPS against 8 in fp32)
        return "16-mixed", ("bf16 is emulated on this GPU (slower than fp32), "
                            "fp16 has tensor cores (with a gradient scaler)")
    if (major, minor) == (6, 0):  # P100: no tensor cores, but fp16 arithmetic at twice fp32's rate and half the
        # memory; sm_61 (GTX 10xx, P4, P40) runs fp16 at 1/64 of fp32's rate, so it stays in 32-true
        return "16-mixed", "no bf16 on this GPU, and its fp16 runs at twice fp32's rate (with a gradient scaler)"
    return "32-true", "fp16 is slower than fp32 on this GPU and there is no bf16"


def _gpu_accelerator(accelerator) -> bool:
    return str(accelerator).lower() in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def _device_indices(devices) -> list[int]:
    """The CUDA devices `--trainer.devices` names: a count, a list or "0,1", "auto"/-1 all of them."""
    count = torch.cuda.device_count()
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return list(range(count))
    if "," in text:
        return [int(d) for d in text.split(",") if d.strip()]
    return list(range(min(int(text), count))) if text.isdigit() else list(range(count))


def choose_precision(trainer) -> tuple[str, str | None]:
    """The precision for `--trainer.precision` left unset, and the line that says which and why (None on the CPU,
    where there is no choice to explain)."""
    if not _gpu_accelerator(trainer.get("accelerator", "auto")):
        return "32-true", None
    indices = _device_indices(trainer.get("devices", "auto")) or [0]
    chosen = [(i, *precision_for(torch.cuda.get_device_capability(i))) for i in indices]
    index, precision, why = min(chosen, key=lambda c: RANK.index(c[1]))
    major, minor = torch.cuda.get_device_capability(index)
    name = torch.cuda.get_device_name(index)
    several = (f" (the slowest of the {len(indices)} GPUs: one precision for all)"
               if len({c[1] for c in chosen}) > 1 else "")
    return precision, (f"{name} (sm_{major}{minor}): {precision}; {why}{several} "
                       f"(--trainer.precision sets another)")


def auto_precision() -> str:
    """The precision the project picks on this machine with the Trainer's defaults (see `choose_precision`)."""
    return choose_precision({"accelerator": "auto", "devices": 1})[0]


def one_gpu_unless_asked(trainer, batch: tuple[str, int] | None, command: str = "fit") -> str | None:
    """Several GPUs and `--trainer.devices` left at auto: train on one, as on one GPU (Lightning would take them
    all with DDP, doubling the effective batch and halving the steps of an epoch: another recipe, unasked).
    `batch`: the data option that sets the batch and its value. Returns the line that says so and how to use them
    all; None when there is nothing to decide."""
    count = torch.cuda.device_count() if _gpu_accelerator(trainer.get("accelerator", "auto")) else 0
    launched = any(name in os.environ for name in ("LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS"))
    if count < 2 or str(trainer.get("devices", "auto")) != "auto" or launched or trainer.get("num_nodes", 1) != 1:
        return None
    trainer["devices"] = 1
    every = "both" if count == 2 else f"all {count}"
    if command != "fit":
        return f"{count} GPUs here: using one; --trainer.devices {count} uses {every} with DDP"
    return (f"{count} GPUs here: training on one, as the recipe was written; --trainer.devices {count} trains on "
            f"{every} with DDP, {effective_batch(count, batch)}")


def effective_batch(devices: int, batch: tuple[str, int] | None) -> str:
    """What DDP on `devices` devices does to the recipe: each takes its own batch."""
    each = f"--data.{batch[0]} {batch[1]}" if batch else "its own batch"
    total = f"{devices} x {batch[1]} = {devices * batch[1]}" if batch and isinstance(batch[1], int) else f"{devices}x"
    return (f"where each device takes {each}: an effective batch of {total} and 1/{devices} of the steps per epoch "
            f"(the recipe's learning rate was tuned for one device's batch)")


def several_gpus(trainer, batch: tuple[str, int] | None) -> str | None:
    """The line for a fit asked to train on several GPUs: what that does to the effective batch."""
    if not _gpu_accelerator(trainer.get("accelerator", "auto")):
        return None
    count = len(_device_indices(trainer.get("devices", "auto"))) * int(trainer.get("num_nodes", 1) or 1)
    return f"DDP on {count} GPUs, {effective_batch(count, batch)}" if count > 1 else None


def several_in_a_kernel(trainer, homework: str) -> str | None:
    """Several GPUs asked for from a notebook's kernel: Lightning runs them there only as forked processes
    (ddp_notebook), which hand back only the weights, and refuses `ddp`. The one line naming what works."""
    if not adapters.interactive() or not _gpu_accelerator(trainer.get("accelerator", "auto")):
        return None
    if len(_device_indices(trainer.get("devices", "auto"))) < 2:
        return None
    devices = trainer.get("devices")
    return (f"--trainer.devices {devices}: several GPUs cannot train from a notebook's kernel (Lightning allows only "
            f"forked processes there, which hand back just the weights, so the run's record, best checkpoint and "
            f"results would be lost). Run it as a command in a cell: !python homework/{homework}.py fit "
            f"--trainer.devices {devices} (DDP), or train on one GPU here: trainer={{'devices': 1}} (the default)")


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


# --- the machine gave out: CUDA out of memory, a data-loader worker killed ------------------------------------
def out_of_memory(error: BaseException) -> bool:
    """CUDA ran out of memory (torch's OutOfMemoryError, or the RuntimeError older code paths raise)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "CUDA out of memory" in str(error))


def worker_killed(error: BaseException) -> bool:
    """A data-loader worker died (killed by the shared-memory limit, a bus error, the OOM killer): torch's
    RuntimeError from the main process, which is all the worker leaves."""
    text = str(error)
    return isinstance(error, RuntimeError) and "DataLoader worker" in text and (
        "killed by signal" in text or "exited unexpectedly" in text)


def memory_remedy(command: str, data, memory_args: tuple[str, ...], accumulate: int,
                  precision) -> tuple[str, str, list]:
    """What used the memory (the data options that size a step, the precision) and what to try, with the options
    of the first remedy (a half batch, with twice the gradient accumulation keeping the effective batch)."""
    sizes = [(name, data.get(name)) for name in memory_args if data.get(name) is not None]
    used = ", ".join(f"--data.{name} {value}" for name, value in sizes)
    used = f"{used}, {precision}" if used else str(precision)
    tries, options = [], []
    if sizes and isinstance(sizes[0][1], int) and sizes[0][1] > 1:
        name, value = sizes[0]
        if command == "fit":
            accumulate = int(accumulate or 1)
            options = [f"--data.{name}", value // 2, "--trainer.accumulate_grad_batches", 2 * accumulate]
            tries.append(f"--data.{name} {value // 2} --trainer.accumulate_grad_batches {2 * accumulate} (the same "
                         f"effective batch)")
        else:
            options = [f"--data.{name}", value // 2]
            tries.append(f"--data.{name} {value // 2} (a smaller evaluation batch)")
    if command == "fit":
        tries.append("--find_batch_size true (the largest batch that fits)")
    if str(precision) in ("32-true", "32", "64-true"):
        tries.append("--trainer.precision 16-mixed (half the activations' memory)")
    others = [f"a smaller --data.{name}" for name, _ in sizes[1:]]
    return used, ", or ".join(tries + others), options
