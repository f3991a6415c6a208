"""Colab's Python (issue 23): the project installs beside what Colab preinstalls, without replacing its torch.

Colab's runtime (December 2026): Python 3.13, torch 2.11 (built for CUDA 12.8) and torchvision 0.26 preinstalled;
Lightning, torchmetrics, jsonargparse, Optuna and sacrebleu not. pip's own resolver answers, for Python 3.13 and
binary wheels only (Colab has no compilers for a source build of, say, sentencepiece), whether every dependency
of setup.cfg resolves with torch pinned at Colab's version. It asks PyPI (minutes: the torch wheel's CUDA
dependencies are resolved too), so it is marked slow, and it skips when PyPI cannot be reached."""
import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLAB_PYTHON, COLAB_TORCH = "3.13", "2.11.0"
NO_NETWORK = ("Could not fetch URL", "NewConnectionError", "Temporary failure in name resolution",
              "Network is unreachable", "No matching distribution found for torch==")


def requirements() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow
def test_every_dependency_is_a_python_313_wheel_beside_colabs_torch(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--target", str(tmp_path / "never"),
         "--python-version", COLAB_PYTHON, "--only-binary", ":all:", "--ignore-installed", "--report", str(report),
         *requirements(), f"torch=={COLAB_TORCH}"], capture_output=True, text=True, timeout=1200, check=False)
    if done.returncode != 0 and any(sign in done.stderr for sign in NO_NETWORK):
        pytest.skip(f"PyPI cannot be reached from here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = {item["metadata"]["name"].lower(): item for item in json.loads(report.read_text())["install"]}
    assert chosen["torch"]["metadata"]["version"] == COLAB_TORCH  # Colab's torch kept, not a newer one
    for name in ("pytorch-lightning", "torchmetrics", "jsonargparse", "optuna", "sacrebleu", "sentencepiece"):
        wheel = chosen[name]["download_info"]["url"].rsplit("/", 1)[-1]
        assert wheel.endswith(".whl") and ("cp313" in wheel or "py3-none" in wheel or "abi3" in wheel), wheel
