"""The student's GPU (issue 23), faked: torch.cuda's functions patched so the project's machine decisions
(homework/cli/hardware.py) see a Colab T4, Kaggle's two T4s, a P100, V100, A100, L4 or H100, each of which says
`is_bf16_supported()` True, as torch does when it counts emulation. Training itself runs on the CPU."""
import json
import re
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel
from pytorch_lightning.plugins.precision import MixedPrecisionPlugin

from callbacks.finite import NonFiniteLoss, StopOnNonFiniteLoss
from homework import hw1
from homework.cli import hardware
from homework.cli.api import HomeworkError
from tests.conftest import QUIET

GPUS = {(6, 0): "Tesla P100-PCIE-16GB", (7, 0): "Tesla V100-SXM2-16GB", (7, 5): "Tesla T4",
        (8, 0): "NVIDIA A100-SXM4-40GB", (8, 9): "NVIDIA L4", (9, 0): "NVIDIA H100 80GB HBM3"}


@pytest.fixture
def fake_gpus(monkeypatch):
    """`fake_gpus(capability, count)`: the project sees `count` such GPUs (each saying bf16 is supported);
    torch and Lightning, which would try to use them, still see none."""
    def fake(capability=(7, 5), count=1, names=None):
        names = names or [GPUS[capability]] * count
        capabilities = capability if isinstance(capability, list) else [capability] * count

        def seen_by_the_project(value, real):
            def function(*args, **kwargs):
                caller = sys._getframe(1).f_globals.get("__name__")
                return value(*args) if caller == "homework.cli.hardware" else real(*args, **kwargs)
            return function

        monkeypatch.setattr(torch.cuda, "is_available", seen_by_the_project(lambda: True, torch.cuda.is_available))
        monkeypatch.setattr(torch.cuda, "device_count", seen_by_the_project(lambda: count, torch.cuda.device_count))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capabilities[i or 0])
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: names[i or 0])
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return fake


@pytest.mark.parametrize("capability, precision", [((6, 0), "16-mixed"), ((7, 0), "16-mixed"), ((7, 5), "16-mixed"),
                                                   ((8, 0), "bf16-mixed"), ((8, 9), "bf16-mixed"),
                                                   ((9, 0), "bf16-mixed")])
def test_the_precision_follows_the_compute_capability_not_is_bf16_supported(capability, precision, fake_gpus):
    fake_gpus(capability)
    chosen, line = hardware.choose_precision({"accelerator": "auto", "devices": "auto"})
    assert chosen == precision == hardware.auto_precision()
    assert line.startswith(f"{GPUS[capability]} (sm_{capability[0]}{capability[1]}): {precision}; ")
    if capability < (8, 0):
        assert "gradient scaler" in line


def test_the_t4_line_says_bf16_is_emulated(fake_gpus):
    fake_gpus((7, 5))
    assert hardware.choose_precision({"accelerator": "gpu", "devices": 1})[1] == (
        "Tesla T4 (sm_75): 16-mixed; bf16 is emulated on this GPU (slower than fp32), fp16 has tensor cores (with a "
        "gradient scaler) (--trainer.precision sets another)")


def test_a_gtx_1080_stays_in_32_true_and_the_cpu_has_no_line(fake_gpus):
    fake_gpus((6, 1), names=["NVIDIA GeForce GTX 1080"])
    assert hardware.choose_precision({"accelerator": "auto", "devices": 1})[0] == "32-true"
    assert hardware.choose_precision({"accelerator": "cpu", "devices": 1}) == ("32-true", None)


def test_several_different_gpus_take_the_slowest_ones_precision(fake_gpus):
    fake_gpus([(8, 0), (7, 5)], count=2, names=["NVIDIA A100-SXM4-40GB", "Tesla T4"])
    precision, line = hardware.choose_precision({"accelerator": "gpu", "devices": 2})
    assert precision == "16-mixed" and line.startswith("Tesla T4 (sm_75): 16-mixed") and "slowest of the 2" in line
    assert hardware.choose_precision({"accelerator": "gpu", "devices": [0]})[0] == "bf16-mixed"


def test_a_fit_on_a_t4_says_its_precision_first(fake_gpus, capsys):
    fake_gpus((7, 5))
    cli = hw1.main(["fit", "--trainer.max_steps", "2", *QUIET])
    assert cli.config.fit.trainer.precision == "16-mixed"  # (Lightning runs it as bf16-mixed on the CPU it really has)
    err = capsys.readouterr().err.splitlines()
    assert ("Tesla T4 (sm_75): 16-mixed; bf16 is emulated on this GPU (slower than fp32), fp16 has tensor cores "
            "(with a gradient scaler) (--trainer.precision sets another)") in err
    assert not any(line.startswith("2 GPUs") for line in err)


def test_two_t4s_train_on_one_unless_asked_and_say_how_to_use_both(fake_gpus, capsys):
    fake_gpus((7, 5), count=2)
    cli = hw1.main(["fit", "--trainer.max_steps", "2", *QUIET])
    assert cli.config.fit.trainer.devices == 1 and cli.trainer.num_devices == 1
    err = capsys.readouterr().err.splitlines()
    assert ("2 GPUs here: training on one, as the recipe was written; --trainer.devices 2 trains on both with DDP, "
            "where each device takes --data.batch_size 128: an effective batch of 2 x 128 = 256 and 1/2 of the steps "
            "per epoch (the recipe's learning rate was tuned for one device's batch)") in err
    predicting = {"accelerator": "auto", "devices": "auto", "num_nodes": 1}
    assert hardware.one_gpu_unless_asked(predicting, ("batch_size", 64), "predict") == (
        "2 GPUs here: using one; --trainer.devices 2 uses both with DDP") and predicting["devices"] == 1
    asked = {"accelerator": "auto", "devices": 2, "num_nodes": 1}
    assert hardware.one_gpu_unless_asked(asked, ("batch_size", 64)) is None and asked["devices"] == 2
    assert hardware.several_gpus(asked, ("max_tokens", 4096)) == (
        "DDP on 2 GPUs, where each device takes --data.max_tokens 4096: an effective batch of 2 x 4096 = 8192 and "
        "1/2 of the steps per epoch (the recipe's learning rate was tuned for one device's batch)")


def test_two_t4s_from_a_notebook_kernel(fake_gpus, monkeypatch, capsys):
    """In a kernel Lightning would fork (ddp_notebook) and refuse ddp: one GPU by default, and several asked for
    are one HomeworkError naming what works there."""
    from pytorch_lightning.trainer.connectors import accelerator_connector

    monkeypatch.setattr(accelerator_connector, "_IS_INTERACTIVE", True)
    fake_gpus((7, 5), count=2)
    result = hw1.fit(max_steps=2, trainer={"enable_progress_bar": False}, diagnose=False)
    assert result.cli.trainer.num_devices == 1
    assert "2 GPUs here: training on one" in capsys.readouterr().err
    with pytest.raises(HomeworkError) as error:
        hw1.fit(max_steps=2, trainer={"devices": 2})
    assert str(error.value) == (
        "--trainer.devices 2: several GPUs cannot train from a notebook's kernel (Lightning allows only forked "
        "processes there, which hand back just the weights, so the run's record, best checkpoint and results would "
        "be lost). Run it as a command in a cell: !python homework/hw1.py fit --trainer.devices 2 (DDP), or train "
        "on one GPU here: trainer={'devices': 1} (the default)")


# --- 16-mixed's gradient scaler and the NaN stop -------------------------------------------------------------
class Overflowing(BoringModel):
    """A loss that is infinite at the steps in `infinite` (fp16 overflow: the scaler skips those updates)."""

    def __init__(self, infinite) -> None:
        super().__init__()
        self.infinite = infinite

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if self.infinite == "all" or self.global_step in self.infinite:
            out["loss"] = out["loss"] * float("inf")
        return out


def scaled_fit(model, steps: int) -> pl.Trainer:
    """A fit under 16-mixed with a real gradient scaler (on the CPU, where Lightning's flag would pick bf16)."""
    scaler = MixedPrecisionPlugin("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = pl.Trainer(accelerator="cpu", plugins=[scaler], max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[StopOnNonFiniteLoss()])
    trainer.fit(model)
    return trainer


def test_the_scalers_skipped_first_steps_do_not_stop_the_fit():
    model = Overflowing({0, 1, 2, 3})
    trainer = scaled_fit(model, 10)
    assert trainer.global_step == 10 and trainer.precision_plugin.scaler.get_scale() == 2.0 ** 12  # 4 halvings
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_loss_that_stays_infinite_under_the_scaler_still_stops_the_fit():
    with pytest.raises(NonFiniteLoss, match=r"became inf at step 16 \(epoch 0, batch 15\), the 16th in a row "
                                            r"under 16-mixed's gradient "
                                            r"scaler.*--trainer.precision 32-true"):
        scaled_fit(Overflowing("all"), 40)


def test_weights_that_turned_nan_under_the_scaler_stop_the_fit_at_once():
    class Broken(Overflowing):
        def on_train_batch_start(self, batch, batch_idx):
            if self.global_step == 2:
                with torch.no_grad():
                    self.layer.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match=r"became nan at step 3 \(epoch 0, batch 2\), and the weights with it"):
        scaled_fit(Broken(set()), 10)


# --- CUDA out of memory, a killed data-loader worker -------------------------------------------------------
def run_out_of_memory_in_epoch(monkeypatch, task_class, epoch: int) -> None:
    """The task's forward raises CUDA's out-of-memory error while training epoch `epoch`, as a 15 GB T4 does."""
    forward = task_class.forward

    def too_big(self, *args, **kwargs):
        if self.training and self.current_epoch == epoch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                         "capacity of 14.74 GiB of which 1.12 GiB is free.")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(task_class, "forward", too_big)


def failed(capsys, main, args) -> tuple[str, list[str]]:
    """The one `error:` line of a command that failed (exit 2), and the other lines on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and not any("Traceback" in line for line in err)
    return err[-1], err


def test_out_of_memory_in_hw1s_third_epoch_is_one_line_and_keeps_the_run(monkeypatch, capsys):
    from models.regression import CovidRegressor

    run_out_of_memory_in_epoch(monkeypatch, CovidRegressor, 2)
    line, _ = failed(capsys, hw1.main, ["fit", "--trainer.max_epochs", "5", *QUIET])
    run = next(Path("runs/hw1").iterdir())
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    assert line == (f"error: fit ran out of GPU memory (CUDA out of memory) with --data.batch_size 128, 32-true; kept "
                    f"{last} (the end of epoch 1). Try --data.batch_size 64 --trainer.accumulate_grad_batches 2 (the "
                    f"same effective batch), or --find_batch_size true (the largest batch that fits), or "
                    f"--trainer.precision 16-mixed (half the activations' memory). Continue: python -m homework.hw1 "
                    f"fit --resume {run} --data.batch_size 64 --trainer.accumulate_grad_batches 2")
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_out_of_memory_in_a_cnns_first_epoch_keeps_nothing_and_predict_says_its_batch(monkeypatch, capsys):
    from homework import hw3, registry
    from models.classifier import ImageClassifier

    tiny = [*registry.tiny("hw3"), *QUIET]
    hw3.main(["fit", *tiny])  # a trained model to predict with
    capsys.readouterr()
    run_out_of_memory_in_epoch(monkeypatch, ImageClassifier, 0)
    runs_before = sorted(Path("runs/hw3").iterdir())
    line, _ = failed(capsys, hw3.main, ["fit", *tiny, "--trainer.precision", "bf16-mixed"])
    assert sorted(Path("runs/hw3").iterdir()) == runs_before  # the failed run left nothing
    assert line == ("error: fit ran out of GPU memory (CUDA out of memory) with --data.batch_size 8, --data.image_size "
                    "32, bf16-mixed; nothing was kept (no checkpoint yet). Try --data.batch_size 4 "
                    "--trainer.accumulate_grad_batches 2 (the same effective batch), or --find_batch_size true (the "
                    "largest batch that fits), or a smaller --data.image_size")

    monkeypatch.setattr(ImageClassifier, "forward", lambda self, x: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory.")))
    line, _ = failed(capsys, hw3.main, ["predict", "--ckpt_path", "best", *tiny])
    assert line == ("error: predict ran out of GPU memory (CUDA out of memory) with --data.batch_size 8, "
                    "--data.image_size 32, 32-true. Try --data.batch_size 4 (a smaller evaluation batch), or "
                    "--trainer.precision 16-mixed (half the activations' memory), or a smaller --data.image_size")


def test_a_data_loader_worker_killed_by_a_bus_error_is_one_line(monkeypatch, capsys):
    """What a worker does when /dev/shm is full (Colab, Kaggle, Docker's 64 MB): SIGBUS, for real."""
    import os
    import signal

    from datamodules.food_images import FoodImages
    from homework import hw3, registry

    getitem = FoodImages.__getitem__

    def bus_error_in_a_worker(self, i):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGBUS)
        return getitem(self, i)

    monkeypatch.setattr(FoodImages, "__getitem__", bus_error_in_a_worker)
    line, _ = failed(capsys, hw3.main, ["fit", *registry.tiny("hw3"), "--data.num_workers", "1", *QUIET])
    # (torch names the signal, or, when its worker watchdog notices first, says the worker "exited unexpectedly")
    assert re.fullmatch(r"error: fit: a data-loader worker died \(DataLoader worker \(pid(\(s\))? \d+\) (is killed by "
                        r"signal: Bus error|exited unexpectedly); on Colab and Kaggle usually their small shared "
                        r"memory\); nothing was kept \(no checkpoint yet\)\. Run with --data.num_workers 0 \(batches "
                        r"built in the main process\)", line), line


# --- Colab's and Kaggle's CPUs, Kaggle's zip ---------------------------------------------------------------
@pytest.mark.parametrize("quota, cpus", [("200000 100000", 2), ("400000 100000", 4), ("max 100000", None)])
def test_the_data_workers_fit_a_containers_cpu_quota(quota, cpus, monkeypatch, tmp_path):
    """Kaggle's container sees the host's cores but gets 4 CPUs' time, Colab 2: one core trains, the rest load."""
    import os

    from datamodules import base
    from datamodules.food import default_num_workers

    (tmp_path / "cpu.max").write_text(quota + "\n")
    monkeypatch.setattr(base, "CPU_QUOTA", tmp_path / "cpu.max")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert base.available_cpus() == (cpus or 16)
    assert default_num_workers() == min(8, (cpus or 16) - 1)


def test_a_kaggle_zip_left_zipped_in_the_data_folder_is_named_not_replaced_by_the_demo(capsys):
    import zipfile

    from datamodules.covid import CovidDataModule
    from tests.conftest import user_error

    CovidDataModule.write_demo(Path("unpacked"))
    Path("data/hw1").mkdir(parents=True)
    with zipfile.ZipFile("data/hw1/ml2022spring-hw1.zip", "w") as archive:  # as `kaggle competitions download` makes
        for path in Path("unpacked").rglob("*"):
            archive.write(path, path.relative_to("unpacked"))
    command = "python -m zipfile -e data/hw1/ml2022spring-hw1.zip data/hw1"
    for args in (["fit"], ["fit", "--data.data_dir", "data/hw1"]):
        assert user_error(capsys, hw1.main, [*args, "--trainer.max_steps", "1", *QUIET]) == (
            f"error: data/hw1 holds ml2022spring-hw1.zip but no unpacked HW1 data: unpack it with `{command}` (then "
            f"run this again)")
    assert not Path("data/hw1-demo").exists()
    import subprocess

    subprocess.run([sys.executable, *command.split()[1:]], check=True)
    cli = hw1.main(["fit", "--trainer.max_epochs", "1", *QUIET])
    assert not cli.datamodule.is_demo and cli.datamodule.data_dir == Path("data/hw1")


def test_several_cpu_processes_from_a_kernel_are_refused_without_suggesting_ddp(monkeypatch, capsys):
    """(CPU devices: Lightning would fork them in a kernel and refuses ddp there, so ddp is not the remedy.)"""
    from pytorch_lightning.trainer.connectors import accelerator_connector

    monkeypatch.setattr(accelerator_connector, "_IS_INTERACTIVE", True)
    with pytest.raises(HomeworkError) as error:
        hw1.fit(max_steps=2, trainer={"accelerator": "cpu", "devices": 2})
    assert str(error.value) == (
        "--trainer.devices 2: in a notebook's kernel Lightning runs several devices only as forked processes, which "
        "hand back just the weights, so the run's record, best checkpoint and results would be lost. Run it as a "
        "command in a cell: !python homework/hw1.py fit --trainer.devices 2 (DDP), or use one device here")
