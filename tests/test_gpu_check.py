"""benchmarks/gpu_check.py: without a GPU it says so in one line and exits 0; its report and its measuring work
(run on the CPU with --cpu, the same code path but for the device)."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run")
def test_without_a_gpu_it_skips_in_one_line(capsys):
    assert gpu_check.main([]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines() == [f"gpu_check: no CUDA GPU here (torch {torch.__version__}), nothing to check"]
    assert not err


@pytest.mark.parametrize("capability, precision", [((7, 5), "16-mixed"), ((6, 0), "16-mixed"), ((7, 0), "16-mixed"),
                                                   ((8, 0), "bf16-mixed"), ((8, 9), "bf16-mixed"),
                                                   ((9, 0), "bf16-mixed"), ((6, 1), "32-true"), (None, "32-true")])
def test_the_precision_docs_gpus_md_promises_by_compute_capability(capability, precision, monkeypatch):
    """(What the project chooses on each faked GPU is tests/test_gpus.py's; both follow docs/gpus.md's table.)"""
    assert gpu_check.expected_precision(capability) == precision


def test_the_table():
    checks = [gpu_check.Check("hw1", "bf16-mixed", True, 120000.0, 60000.0, 812.4),
              gpu_check.Check("hw5", "bf16-mixed", False, 5000.0, 4000.0, 2048.0, unit="tokens/s",
                              notes=["precision 16-mixed, docs/gpus.md promises bf16-mixed"])]
    lines = gpu_check.format_table(checks).splitlines()
    assert lines[0].split() == ["homework", "precision", "loss", "mixed", "/s", "32-true", "/s", "speed-up", "peak",
                                "GPU"]
    assert lines[1].split() == ["hw1", "bf16-mixed", "finite", "120,000", "samples", "60,000", "2.00x", "812", "MiB"]
    assert lines[2].split()[:4] == ["hw5", "bf16-mixed", "NOT", "FINITE"] and "1.25x" in lines[2]
    assert len({line.index("precision" if i == 0 else "bf16") for i, line in enumerate(lines[:3])}) == 1  # aligned
    assert lines[3] == "note: precision 16-mixed, docs/gpus.md promises bf16-mixed"


def test_hw4_one_by_one_is_each_utterance_unpadded():
    frames = torch.randn(3, 5, 2)
    padding = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    singles = gpu_check.split((frames, padding))
    assert [s[0].shape[1] for s in singles] == [5, 2, 4] and not any(s[1].any() for s in singles)
    assert torch.equal(singles[1][0], frames[1:2, :2])


def test_the_check_measures_a_short_hw1_fit_on_the_cpu(capsys):
    assert gpu_check.main(["--cpu", "--homeworks", "hw1", "--steps", "12", "--warmup", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("hw1 "))
    assert row.split()[1:3] == ["32-true", "finite"] and "FAILED" not in "\n".join(out)
    rate = float(row.split()[3].replace(",", ""))
    assert rate > 0 and not math.isnan(rate)
