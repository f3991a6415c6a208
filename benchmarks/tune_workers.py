"""One `tune` worker against two on one PostgreSQL study: the wall time of the same N trials, as a ratio.

    python benchmarks/tune_workers.py                  # 8 trials of HW1 (demo data, 100 epochs each)
    python benchmarks/tune_workers.py --n_trials 12 --data_dir ../shared/data/hw1/ml2022

Starts Debian's PostgreSQL on loopback in a temporary directory (as `nobody` when run as root: the server
refuses root), runs study A with one worker and study B with two (each worker one torch thread, so two workers
use two cores), stops the server. Ideal ratio: 0.5 on a machine with two free cores. Prints one table.
"""
import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = "model.optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\nmodel.dropout: {uniform: [0.0, 0.3]}\n"


def postgres_binaries() -> Path | None:
    """Where Debian's PostgreSQL programs are (initdb, pg_ctl), None when it is not installed."""
    found = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    return Path(found).resolve().parent if found else None


def postgres(folder: Path) -> tuple[str, callable]:
    """A server on loopback, a free port, its data in `folder`: its URL, and the function that stops it.
    (tests/test_tune.py starts its own the same way.)"""
    binaries = postgres_binaries()
    if binaries is None:
        sys.exit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    as_user = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", lambda: run(
        str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")


def study(url: str, name: str, workers: int, n_trials: int, options: list[str], cwd: Path) -> float:
    """Seconds until every worker of the study has ended."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "NTU_ML_HOME": str(cwd)}
    args = [sys.executable, "-m", "homework.hw1", "tune", "--space", str(cwd / "space.yaml"), "--storage", url,
            "--study", name, "--n_trials", str(n_trials), "--torch_num_threads", "1", *options]
    started = time.perf_counter()
    processes = [subprocess.Popen(args, cwd=cwd, env=env, stdout=open(cwd / f"{name}-{k}.log", "w"),
                                  stderr=subprocess.STDOUT) for k in range(workers)]
    if any(p.wait() != 0 for p in processes):
        sys.exit(f"a worker of study {name} failed: see {cwd}/{name}-*.log")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--data_dir", default=None, help="HW1's data (default: the demo set)")
    given = parser.parse_args()
    options = ["--trainer.max_epochs", str(given.epochs), "--trainer.enable_progress_bar", "false"]
    if given.data_dir:
        options += ["--data.data_dir", str(Path(given.data_dir).resolve())]
    folder = Path(tempfile.mkdtemp(prefix="tune-workers-"))
    (folder / "space.yaml").write_text(SPACE)
    url, stop = postgres(folder)
    try:
        one = study(url, "one", 1, given.n_trials, options, folder)
        two = study(url, "two", 2, given.n_trials, options, folder)
    finally:
        stop()
    print(f"| workers | {given.n_trials} trials of HW1, {given.epochs} epochs | ratio |\n|---|---|---|\n"
          f"| 1 | {one:.1f} s | 1.00 |\n| 2 | {two:.1f} s | {two / one:.2f} |")
    print(f"({os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.1f}; logs in {folder})")


if __name__ == "__main__":
    main()
