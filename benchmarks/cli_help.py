"""`--help` cost: each homework's `fit --help` against a bare `import pytorch_lightning`, side by side.

`--help` is what a student runs first and most often; it should cost little more than importing
Lightning itself (the floor: every command needs it). Heavy libraries (W&B, pandas, scikit-learn,
sentencepiece, ...) are imported only by the code that uses them. Goal: at most 1.2x the bare import.

    python benchmarks/cli_help.py [--repeats 5]

Runs are interleaved and the fastest of `--repeats` is kept (the machine is shared and noisy);
peak memory is each process's max resident set size.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one run of `command`."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "WANDB_MODE": "disabled"})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    homeworks = sorted(p.stem for p in (ROOT / "homework").glob("hw[0-9].py"))
    commands = {"import pytorch_lightning": [sys.executable, "-c", "import pytorch_lightning"]}
    commands |= {f"{hw}.py fit --help": [sys.executable, str(ROOT / "homework" / f"{hw}.py"), "fit", "--help"]
                 for hw in homeworks}
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as cwd:
        timed(commands["import pytorch_lightning"], cwd)  # warm the file cache once
        for _ in range(args.repeats):
            for name, command in commands.items():
                seconds, rss = timed(command, cwd)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, max(rss, best.get(name, (0, 0))[1]))
    floor = best["import pytorch_lightning"][0]
    print(f"{'command':<28} {'wall s':>7} {'peak MiB':>9} {'ratio':>6}   (fastest of {args.repeats})")
    for name, (seconds, rss) in best.items():
        print(f"{name:<28} {seconds:7.2f} {rss:9.0f} {seconds / floor:6.2f}")


if __name__ == "__main__":
    main()
