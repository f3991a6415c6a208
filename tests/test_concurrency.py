"""Two runs started at the same moment in the same directory share nothing they write (run directory,
config, checkpoints, W&B files); what they both need (demo data, feature caches) is built once, under a
lock, atomically: the second run waits and reuses it, and no reader ever sees a half-written file."""
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datamodules.atomic import build_once, lock_path, write_atomically
from datamodules.covid import CovidDataModule
from datamodules.libriphone import LibriPhoneDataModule
from datamodules.packed import PackedTensors

ROOT = Path(__file__).resolve().parents[1]
CONTENT = b"0123456789" * 100_000  # 1 MB, written in two halves with a pause between them

# Each process imports everything first, then waits until all are ready: the commands start in the same
# millisecond, so they race for the same run-directory name, demo set and caches.
AT_ONCE = """
import os, sys, time
from pathlib import Path
from homework.{homework} import main
barrier, count = Path(sys.argv[1]), int(sys.argv[2])
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < count:
    time.sleep(0.002)
main(sys.argv[3:])
"""


def start_at_once(homework: str, args: list[str], count: int = 2, env: dict | None = None) -> list[tuple[int, str]]:
    """Run `count` copies of a command in the current directory at the same moment: [(exit code, stderr)]."""
    barrier = Path("barrier")
    barrier.mkdir()
    script = AT_ONCE.format(homework=homework)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    processes = []
    for k in range(count):
        with open(f"out{k}.txt", "w") as out, open(f"err{k}.txt", "w") as err:  # files: no pipe fills and blocks
            processes.append(subprocess.Popen([sys.executable, "-c", script, str(barrier), str(count), *args],
                                              stdout=out, stderr=err, env=environment))
    codes = [p.wait(timeout=300) for p in processes]
    return [(code, Path(f"err{k}.txt").read_text()) for k, code in enumerate(codes)]


def leftovers() -> list[Path]:
    """Temporary files or folders anywhere below the working directory."""
    return [p for p in Path(".").rglob("*") if ".tmp" in p.name]


def test_two_fits_at_once_share_no_file_and_build_the_demo_and_caches_once(tmp_path):
    """HW2's demo fit: writes the demo set and packs its features into caches; W&B offline in each run."""
    results = start_at_once("hw2", [
        "fit", "--model.hidden_dim", "8", "--model.num_layers", "1", "--data.batch_size", "64",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--torch_num_threads", "1"], env={"WANDB_MODE": "offline"})
    for code, err in results:
        assert code == 0, err[-3000:]

    runs = sorted(p for p in Path("runs/hw2").iterdir() if p.is_dir())
    assert len(runs) == 2, runs
    wandb_runs = set()
    for run in runs:
        assert (run / "config.yaml").is_file()
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "checkpoints").glob("best-*.ckpt"))
        (offline,) = (run / "wandb").glob("offline-run-*")
        wandb_runs.add(offline.name)
    assert len(wandb_runs) == 2

    # one demo set, the same files a single writer makes; one cache per split, complete
    assert sorted(p.name for p in Path("data").iterdir() if not p.name.startswith(".")) == ["hw2-demo"]
    demo, fresh = Path("data/hw2-demo"), tmp_path / "fresh"
    LibriPhoneDataModule.write_demo(fresh)
    written = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert written and all((demo / p).read_bytes() == (fresh / p).read_bytes() for p in written)
    cache = next(demo.rglob(".cache"))
    caches = sorted(p.name.split("-")[0] for p in cache.iterdir() if p.is_dir())
    assert caches == ["test", "train"]
    for folder in cache.iterdir():
        if folder.is_dir():
            packed = PackedTensors(folder)
            assert int(packed.offsets[-1]) == packed.num_rows == (folder / "data.bin").stat().st_size // 2 // 39
    assert not leftovers()
    errs = "".join(err for _, err in results)
    for split, files in (("train", 240), ("test", 60)):  # packed by one run; the other waited, or came later
        assert errs.count(f"Packed {files} {split} files") == 1, errs


# --- the helpers ----------------------------------------------------------------------------------
def slow_build(tmp: Path) -> None:
    """Record that a build happened, then write CONTENT in two halves with a pause between them."""
    with open("builds.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    with open(tmp, "wb") as out:
        out.write(CONTENT[:len(CONTENT) // 2])
        out.flush()
        time.sleep(0.3)
        out.write(CONTENT[len(CONTENT) // 2:])


def build_and_read(target: str, start: float) -> bytes:
    time.sleep(max(0.0, start - time.time()))
    build_once(Path(target), slow_build)
    return Path(target).read_bytes()


def read_as_soon_as_it_exists(target: str, deadline: float) -> list[int]:
    """Poll for `target` without any lock; return the sizes of what was read (all must be complete)."""
    sizes = []
    while time.time() < deadline and len(sizes) < 50:
        try:
            sizes.append(len(Path(target).read_bytes()))
        except FileNotFoundError:
            time.sleep(0.001)
    return sizes


def test_processes_racing_to_build_build_once_and_never_read_half_a_file(tmp_path):
    target = str(tmp_path / "cache" / "model.bin")
    context = multiprocessing.get_context("fork")
    start = time.time() + 0.5
    with context.Pool(7) as pool:
        reader = pool.apply_async(read_as_soon_as_it_exists, (target, start + 5))
        builders = [pool.apply_async(build_and_read, (target, start)) for _ in range(6)]
        contents = [b.get(timeout=60) for b in builders]
        sizes = reader.get(timeout=60)
    assert all(content == CONTENT for content in contents)
    assert len(Path("builds.log").read_text().split()) == 1  # one built it, five waited and reused it
    assert sizes and set(sizes) == {len(CONTENT)}  # a reader saw nothing, then the whole file
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [lock_path(Path(target)).name, "model.bin"]


def test_a_failed_build_leaves_nothing_and_the_next_one_builds(tmp_path):
    target = tmp_path / "packed"

    def fails(tmp: Path) -> None:
        (tmp / "data.bin").write_bytes(b"half")
        raise KeyboardInterrupt  # Ctrl-C mid-build

    with pytest.raises(KeyboardInterrupt):
        build_once(target, fails, directory=True)
    assert not target.exists() and not leftovers()
    assert build_once(target, lambda tmp: (tmp / "data.bin").write_bytes(b"whole"), directory=True)
    assert (target / "data.bin").read_bytes() == b"whole"
    assert not build_once(target, lambda tmp: pytest.fail("built twice"), directory=True)


def test_a_half_written_demo_set_is_written_again_and_readable_by_everyone():
    demo = CovidDataModule.demo_dir()
    demo.mkdir(parents=True)
    (demo / "covid.train.csv").write_text("id,tested_positive\n0,")  # left by a run killed mid-write
    lock_path(demo).touch()  # (by an older version of build_once, whose lock tells it was the project's folder)
    old = os.umask(0o022)
    try:
        CovidDataModule.ensure_demo(demo)
    finally:
        os.umask(old)
    assert CovidDataModule.locate(demo) is not None and not leftovers()
    assert oct(demo.stat().st_mode & 0o777) == oct(0o755)  # not the owner-only mode of a temp folder


def test_small_files_are_replaced_atomically(tmp_path):
    path = tmp_path / "failures.json"
    write_atomically(path, "[]")
    write_atomically(path, b"[[3, \"truncated\"]]")
    assert json.loads(path.read_text()) == [[3, "truncated"]]
    assert [p.name for p in tmp_path.iterdir()] == ["failures.json"]
