"""Every homework's fit + predict with what a student gets without flags: the default logger (W&B, offline
without a login), the progress output of a piped command, the diagnosis, the Next line pasted as printed."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from homework import registry

ROOT = Path(__file__).resolve().parents[1]


def run_script(homework: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python homework/hwN.py ARGS` as typed in `cwd`, output piped, the environment as the test left it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "homework" / f"{homework}.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.parametrize("homework", registry.names())
def test_fit_then_the_printed_next_command_with_the_default_logger(homework, tmp_path, default_logger):
    fit = run_script(homework, ["fit", *registry.tiny(homework)], tmp_path)
    lines = fit.stdout.strip().splitlines()
    assert "\r" not in fit.stdout + fit.stderr and "\x1b[" not in fit.stdout + fit.stderr
    assert any(line.startswith("epoch 0") for line in lines)  # one line per epoch, not a redrawn bar
    (run,) = (tmp_path / "runs" / homework).iterdir()
    (offline,) = (run / "wandb").glob("offline-run-*")  # tracked, offline: nothing lost without a login
    assert f"W&B: logged offline; upload with `wandb sync {run.resolve()}/wandb/offline-run-*`" in fit.stdout
    assert lines[-2] == f"Run directory: runs/{homework}/{run.name}"
    assert lines[-1].startswith("Next: python ")
    assert lines[-1].endswith(f"predict --ckpt_path runs/{homework}/{run.name}")

    predict = run_script(homework, shlex.split(lines[-1])[3:], tmp_path)
    assert "Wrote " in predict.stdout
    assert not list((tmp_path / "runs" / homework).glob("*predict*"))  # evaluating makes no run directory
    assert len([f for f in run.iterdir() if f.suffix in (".csv", ".txt") and f.name != "metrics.csv"]) == 1
