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
