"""Shared test fixtures: every test runs in its own temp dir, with W&B off unless a test turns it on."""
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Quiet, and no post-fit diagnosis (its reference model is tested in test_advisor.py): most tests fit many times
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--diagnose", "false"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """cwd = a fresh temp dir, holding that test's `data/` and `runs/`; no W&B login, no network."""
    monkeypatch.chdir(tmp_path)
    # By default runs/ and data/ live in the project folder (datamodules/workspace.py), which would be this
    # checkout: "." keeps them in each test's own working directory, in subprocesses too. The default itself
    # is tested by tests/test_workspace.py on a copy of the project.
    monkeypatch.setenv("NTU_ML_HOME", ".")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: W&B counts as logged out, so runs log offline
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # W&B offline (what a student without a login gets) costs 2-5 s per run and writes nothing the other tests
    # read, so most tests, which fit many times and are about something else, switch it off. The tests that use
    # the `default_logger` fixture run with the default: every homework's fit + predict (test_defaults.py),
    # the multi-device fits (test_distributed.py) and the tracking tests.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


@pytest.fixture
def default_logger(monkeypatch):
    """W&B as a student without a login meets it: the default logger, offline, and its own output."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per op: the tests' tiny batches run fastest so, and a busy shared CPU cannot stall
    them (two threads spin-waiting on each other made an LSTM step ~8x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs at `disk/`, to fill or make read-only (root can mount one; else the test is skipped: a test that
    fakes the OSError at the write stands for it)."""
    import os

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or os.system(f"mount -t tmpfs -o size=3m tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("cannot mount a small tmpfs here (not root, or no permission)")
    yield mount
    os.system(f"umount -l {mount}")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def user_error(capsys, main, args: list[str]) -> str:
    """Run a command that must fail as a user mistake: exit code 2, exactly one `error:` line and it the last
    thing on stderr, and nothing written under runs/ (no config, checkpoint or W&B files, no empty run
    directory). Returns the line."""
    before = set(Path("runs").rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err[-3:]
    assert len([line for line in err if line.startswith("error:")]) == 1, err
    assert set(Path("runs").rglob("*")) == before
    return err[-1]
