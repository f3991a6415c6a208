"""The machine around a run (issue #24): the user's own files, full and read-only disks, options the data cannot
satisfy, another homework's run. Each case ends in one `error:` line, loses nothing and leaves a run that goes on."""
import errno
import json
import os
from pathlib import Path

import pytest

from datamodules import outputs
from datamodules.errors import DataError
from homework.hw1 import main
from tests.conftest import QUIET, user_error

FAST = ["--trainer.max_epochs", "2", *QUIET]


# --- the user's own files are never replaced -------------------------------------------------------------------
def test_a_user_named_file_that_exists_is_refused_and_kept(capsys):
    run = main(["fit", *FAST]).run_dir
    mine = Path("notes")
    mine.mkdir()
    (mine / "report.md").write_text("my report\n")
    line = user_error(capsys, main, ["predict", "--ckpt_path", str(run), "--submission.output_dir", "notes",
                                     "--submission.filename", "report.md", *QUIET])
    assert line == ("error: --submission.filename notes/report.md: a file is already there and this project did "
                    "not write it, so it is kept; choose another name, or move it away first")
    assert (mine / "report.md").read_text() == "my report\n" and sorted(p.name for p in mine.iterdir()) == ["report.md"]

    # a name the user chose that this project wrote, from the same inputs: the same command again replaces it
    main(["predict", "--ckpt_path", str(run), "--submission.output_dir", "notes", "--submission.filename", "sub.csv",
          *QUIET])
    main(["predict", "--ckpt_path", str(run), "--submission.output_dir", "notes", "--submission.filename", "sub.csv",
          *QUIET])
    assert "replacing the previous one (same inputs)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["run.json", "config.yaml", "checkpoints/last.ckpt"])
def test_a_runs_own_file_is_never_an_output(capsys, name):
    run = main(["fit", *FAST]).run_dir
    before = (run / name).read_bytes()
    folder, _, filename = f"{run}/{name}".rpartition("/")
    line = user_error(capsys, main, ["predict", "--ckpt_path", str(run), "--submission.output_dir", folder,
                                     "--submission.filename", filename, *QUIET])
    assert line.startswith(f"error: --submission.filename {run / name}: that is a run's own file")
    assert (run / name).read_bytes() == before


def test_the_default_name_goes_beside_a_file_the_project_did_not_write(capsys):
    run = main(["fit", *FAST]).run_dir
    (run / "pred.csv").write_text("the student's own edit\n")  # not what predict wrote
    main(["predict", "--ckpt_path", str(run), *QUIET])
    out = capsys.readouterr().out
    assert (run / "pred.csv").read_text() == "the student's own edit\n"
    assert "pred-2.csv" in out and "pred.csv there was made from other inputs and is kept" in out


def test_the_rule_in_one_place(tmp_path):
    user = tmp_path / "plot.png"
    user.write_bytes(b"user")
    assert outputs.target(user, "a") == tmp_path / "plot-2.png"  # the default name: beside
    with pytest.raises(DataError, match="did not write it"):
        outputs.target(user, "a", "--out")
    ours = tmp_path / "curve.png"
    ours.write_bytes(b"ours")
    outputs.remember(ours, "a")
    assert outputs.target(ours, "a", "--out") == ours  # ours, same inputs: replaced
    with pytest.raises(DataError, match="from other inputs"):
        outputs.target(ours, "b", "--out")
    assert outputs.target(ours, "b") == tmp_path / "curve-2.png"
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(DataError, match="a run's own file"):
        outputs.target(tmp_path / "config.yaml", "a")
    with pytest.raises(DataError, match="a run's own file"):
        outputs.target(tmp_path / "x.ckpt", "a")


# --- a full disk, a read-only folder ----------------------------------------------------------------------------
class FillDisk(__import__("pytorch_lightning").Callback):
    """After the second epoch, fills the disk the run writes to (as Colab's disk or a Drive quota fills); once in
    this process (the resumed run has it in its config too)."""

    filled: list = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1 and not self.filled:
            self.filled.append(True)
            with open(Path(trainer.default_root_dir).parent / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs at `disk/` (root can mount one; else the test is skipped and the faked one below stands)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or os.system(f"mount -t tmpfs -o size=3m tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("cannot mount a small tmpfs here (not root, or no permission)")
    yield mount
    os.system(f"umount -l {mount}")


def one_line(capsys, args) -> str:
    """Like conftest's `user_error`, for a condition that keeps what was written: exit 2, one `error:` line, last."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and sum(line.startswith("error:") for line in err) == 1, err[-3:]
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def assert_full_disk_line(capsys, args, root):
    line = one_line(capsys, args)
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    assert line.startswith(f"error: cannot write '{run}/") and "no space left on the disk (" in line, line
    assert line.endswith(f"once there is room, python -m homework.hw1 fit --resume {run}"), line
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "no space left on the disk" in record["error"]  # not "running"
    last = __import__("torch").load(run / "checkpoints" / "last.ckpt", weights_only=False)  # whole
    assert last["epoch"] >= 0 and not list(run.rglob(".*tmp*"))
    return run


def test_a_disk_that_fills_mid_fit_is_one_line_and_the_run_resumes(capsys, small_disk):
    root = small_disk / "runs"
    run = assert_full_disk_line(capsys, ["fit", "--trainer.max_epochs", "6", "--trainer.default_root_dir", str(root),
                                         f"--trainer.callbacks+={__name__}.FillDisk", *QUIET], root)
    (root / "filler").unlink()  # the student frees space, and runs the printed command
    main(["fit", "--resume", str(run), "--trainer.max_epochs", "6", *QUIET])
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_a_full_disk_faked_at_the_checkpoint_write_is_one_line(capsys, monkeypatch):
    # where no tmpfs can be mounted: the OSError a full disk raises, at the write, from the third checkpoint on
    import callbacks.checkpointing

    saves, save = [], callbacks.checkpointing.torch.save

    def full_after_two(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        save(obj, f, *args, **kwargs)

    monkeypatch.setattr(callbacks.checkpointing.torch, "save", full_after_two)
    root = Path.cwd() / "elsewhere"
    assert_full_disk_line(capsys, ["fit", "--trainer.max_epochs", "6", "--trainer.default_root_dir", str(root), *QUIET],
                          root)


def test_predict_into_a_read_only_run_is_one_line(capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    run = main(["fit", *FAST]).run_dir
    run.chmod(0o555)
    try:
        line = user_error(capsys, main, ["predict", "--ckpt_path", str(run), *QUIET])
    finally:
        run.chmod(0o755)
    assert line.startswith(f"error: cannot write '{run / 'pred.csv'}': permission denied; write elsewhere")
