"""The machine around a run (issue #24): the user's own files, full and read-only disks, options the data cannot
satisfy, another homework's run. Each case ends in one `error:` line, loses nothing and leaves a run that goes on."""
import errno
import json
import os
from pathlib import Path

import pytest

from datamodules import outputs
from datamodules.errors import DataError
from homework import runs
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
    assert "pred-2.csv (" in out and "; pred.csv there was not written by this project, so it is kept" in out


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


def test_a_users_file_where_a_picture_goes_is_kept_and_the_line_says_where_it_went(capsys, caplog):
    run = main(["fit", "--trainer.max_epochs", "1", *QUIET]).run_dir
    # the student's own picture at the learning curve's name (not in the folder's record of what the project wrote)
    record = json.loads((run / outputs.MANIFEST).read_text())
    assert record.pop("learning_curve.png") == str(run.resolve())  # the curve went through the rule, from this run
    (run / outputs.MANIFEST).write_text(json.dumps(record))
    (run / "learning_curve.png").write_bytes(b"my picture")
    capsys.readouterr()
    from homework import hw1  # (the Python API: its result shows the curve in a notebook)

    result = hw1.fit(resume=str(run), max_epochs=2, trainer={"enable_progress_bar": False}, diagnose=False)
    said = capsys.readouterr().out + caplog.text
    assert (run / "learning_curve.png").read_bytes() == b"my picture"
    assert (run / "learning_curve-2.png").read_bytes().startswith(b"\x89PNG")
    assert result.learning_curve == run / "learning_curve-2.png"  # what a notebook shows: the curve, not the picture
    assert json.loads((run / "learning_curve.json").read_text())["recorded_epochs"] == 2  # (`diagnose` reads it)
    assert (f"Learning curve: {run / 'learning_curve-2.png'} (learning_curve.png there was not written by this "
            f"project, so it is kept)") in said, said[-2000:]


@pytest.mark.parametrize("callback, argument", [("callbacks.size_accuracy.SizeAccuracyPlot", "filename"),
                                                ("callbacks.domain_features.DomainFeaturesTSNE", "filename"),
                                                ("callbacks.classification_plots.ClassificationPlots",
                                                 "confusion_filename"),
                                                ("callbacks.classification_plots.ClassificationPlots",
                                                 "errors_filename")])
def test_a_picture_named_by_the_user_is_refused_before_training(tmp_path, callback, argument):
    # (the callbacks alone, on the trainer's run directory: their homeworks' fits take minutes; the rule is shared)
    from importlib import import_module
    from types import SimpleNamespace

    module, name = callback.rsplit(".", 1)
    plot_class = getattr(import_module(module), name)
    (tmp_path / "report.png").write_bytes(b"mine")
    plot = plot_class(**{argument: "report.png"})
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path))
    with pytest.raises(DataError, match=rf"^{name}.{argument} {tmp_path / 'report.png'}: a file "
                                        rf"is already there and this project did not write it, so it is kept"):
        plot.on_fit_start(trainer, None)
    assert (tmp_path / "report.png").read_bytes() == b"mine"
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(DataError, match="a run's own file"):
        plot_class(**{argument: "config.yaml"}).on_fit_start(trainer, None)


def test_a_users_folder_where_the_demo_set_goes_is_kept(capsys):
    Path("data/hw1-demo").mkdir(parents=True)
    Path("data/hw1-demo/notes.txt").write_text("mine\n")
    line = user_error(capsys, main, ["fit", *FAST])
    assert line == ("error: 'data/hw1-demo': a folder this project did not make is there and it is not the demo "
                    "set, so it is kept; move it away (a folder of your data: pass it with --data.data_dir)")
    assert [p.name for p in Path("data/hw1-demo").iterdir()] == ["notes.txt"]


def test_an_older_versions_demo_set_is_rebuilt_saying_so(capsys, caplog):
    # what an older version left: its build lock beside the folder (build_once keeps it), no mark, an older layout
    Path("data/hw1-demo").mkdir(parents=True)
    Path("data/hw1-demo/covid.train.csv").write_text("id,old\n")
    Path("data/.hw1-demo.lock").touch()
    main(["fit", "--trainer.max_epochs", "1", *QUIET])
    assert "Replacing data/hw1-demo: this project made it, but it is not the demo set this version reads" in \
        capsys.readouterr().out + caplog.text
    assert Path("data/hw1-demo/.ntu-ml-built").exists() and Path("data/hw1-demo/covid.test.csv").is_file()


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
    # the best checkpoint as read (`best`, `--ckpt_path <run>`) is one the disk holds, not the one it had no room for
    assert (run / runs.read_record(run)["best_checkpoint"]).is_file()
    return run


def test_a_disk_that_fills_mid_fit_is_one_line_and_the_run_resumes(capsys, small_disk):
    root = small_disk / "runs"
    run = assert_full_disk_line(capsys, ["fit", "--trainer.max_epochs", "6", "--trainer.default_root_dir", str(root),
                                         f"--trainer.callbacks+={__name__}.FillDisk", *QUIET], root)
    (root / "filler").unlink()  # the student frees space, and runs the printed command
    main(["fit", "--resume", str(run), "--trainer.max_epochs", "6", *QUIET])
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   # torch's zip writer, when the write under it failed (torch 2.x)
                                   RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")])
def test_a_full_disk_faked_at_the_checkpoint_write_is_one_line(capsys, monkeypatch, error):
    # where no tmpfs can be mounted: the error a full disk raises, at the write, from the third checkpoint on
    import callbacks.checkpointing

    saves, save = [], callbacks.checkpointing.torch.save

    def full_after_two(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) > 2:
            raise error
        save(obj, f, *args, **kwargs)

    monkeypatch.setattr(callbacks.checkpointing.torch, "save", full_after_two)
    root = Path.cwd() / "elsewhere"
    assert_full_disk_line(capsys, ["fit", "--trainer.max_epochs", "6", "--trainer.default_root_dir", str(root), *QUIET],
                          root)


def test_a_read_only_run_is_one_line_for_predict_and_resume(capsys, small_disk):
    # a shared mount or a Drive folder without write access: the runs' disk made read-only after training
    root = small_disk / "runs"
    run = main(["fit", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root), *QUIET]).run_dir
    assert os.system(f"mount -o remount,ro {small_disk}") == 0
    line = one_line(capsys, ["predict", "--ckpt_path", str(run), *QUIET])
    assert line.startswith(f"error: cannot write '{run / 'pred.csv'}': a read-only file system; write elsewhere: "
                           f"--trainer.default_root_dir DIR for runs, --submission.output_dir DIR"), line
    line = one_line(capsys, ["fit", "--resume", str(run), "--trainer.max_epochs", "3", *QUIET])
    assert line.startswith(f"error: cannot write '{run}/") and "a read-only file system" in line, line
    main(["predict", "--ckpt_path", str(run), "--submission.output_dir", "out", *QUIET])  # what the line says works
    assert Path("out/pred.csv").is_file()


# --- options the data cannot satisfy: one line naming the option and the number that fits -----------------------
@pytest.mark.parametrize("args, expected", [
    (["--trainer.limit_val_batches", "0.001"],
     "error: --trainer.limit_val_batches 0.001: the val split has 1 batch(es), so that fraction of it is none; give "
     "at least 1 (or a whole number of batches, e.g. 1)"),
    (["--trainer.val_check_interval", "50"],
     "error: --trainer.val_check_interval 50: an epoch has 1 training batch(es); give 1 or fewer, a fraction such as "
     "0.5, or add --trainer.check_val_every_n_epoch null to count batches across epochs"),
    (["--data.num_folds", "5000", "--data.fold", "0"],
     "error: --data.num_folds 5000: the training data has 1500 rows, so at most 1500 folds (each fold validates on at "
     "least one row)"),
    (["--data.val_ratio", "0.0001"],
     "error: --data.val_ratio 0.0001: the training data has 1500 row(s); at least 10000 are needed for a validation "
     "split of 0.0001"),
])
def test_options_the_data_cannot_satisfy_are_one_line(capsys, args, expected):
    assert user_error(capsys, main, ["fit", *args, *FAST]) == expected


def test_a_training_file_too_small_for_a_validation_split_is_one_line(capsys):
    main(["fit", "--trainer.max_epochs", "1", *QUIET])  # writes the demo set, whose format the small file takes
    Path("small").mkdir()
    for name in ("covid.train.csv", "covid.test.csv"):
        lines = Path("data/hw1-demo", name).read_text().splitlines()
        Path("small", name).write_text("\n".join(lines[:4 if "train" in name else 3]) + "\n")  # 3 rows, 2 rows
    line = user_error(capsys, main, ["fit", "--data.data_dir", "small", *FAST])
    assert line == "error: --data.val_ratio 0.2: the training data has 3 row(s); at least 5 are needed for a " \
                   "validation split of 0.2"


# --- runs know their homework ------------------------------------------------------------------------------------
def another_homeworks_run() -> Path:
    """A finished run of HW1, its run.json saying it is HW2's (what an HW2 run holds, without training HW2)."""
    run = main(["fit", "--trainer.max_epochs", "1", *QUIET]).run_dir
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "homework": "hw2"}))
    return run


@pytest.mark.parametrize("command", [["fit", "--resume", "{run}", "--trainer.max_epochs", "3"],
                                     ["predict", "--ckpt_path", "{run}"], ["diagnose", "{run}"]])
def test_another_homeworks_run_is_one_line_naming_it(capsys, command):
    run = another_homeworks_run()
    line = user_error(capsys, main,
                      [a.format(run=run) for a in command] + (QUIET[:4] if command[0] != "diagnose" else []))
    flag = {"fit": "--resume", "predict": "--ckpt_path", "diagnose": "diagnose"}[command[0]]
    assert line == (f"error: {flag} {run}: that is a run of hw2 ({run / 'run.json'}), not of hw1; use "
                    f"homework/hw2.py with it")


@pytest.mark.parametrize("command", [["fit", "--resume", "{run}", "--trainer.max_epochs", "3"],
                                     ["predict", "--ckpt_path", "{run}"], ["diagnose", "{run}"]])
def test_a_damaged_run_record_is_one_line_naming_it(capsys, command):
    run = main(["fit", "--trainer.max_epochs", "1", *QUIET]).run_dir
    (run / "run.json").write_text('{"homework": "hw1", "sta')  # cut short
    line = user_error(capsys, main,
                      [a.format(run=run) for a in command] + (QUIET[:4] if command[0] != "diagnose" else []))
    flag = {"fit": "--resume", "predict": "--ckpt_path", "diagnose": "diagnose"}[command[0]]
    assert line.startswith(f"error: {flag} {run}: its run record {run / 'run.json'} cannot be read (it is not valid "
                           f"JSON)"), line


def test_a_users_best_config_in_the_study_folder_is_kept_and_the_header_names_the_new_file(tmp_path, capsys):
    from types import SimpleNamespace

    from homework.lab.study_results import write_best_config

    (tmp_path / "best_config.yaml").write_text("mine\n")
    best = SimpleNamespace(number=3, value=0.5, user_attrs={"config": "trainer: {}\nmodel: {}\n"})
    went = write_best_config(best, tmp_path / "best_config.yaml", "s", "val_mse", tmp_path / "runs", False, "hw1")
    assert went == tmp_path / "best_config-2.yaml" and (tmp_path / "best_config.yaml").read_text() == "mine\n"
    assert f"--config {went}" in went.read_text().splitlines()[1]
    assert f"Best config: {went} (best_config.yaml there was not written by this project, so it is kept)" in \
        capsys.readouterr().out
