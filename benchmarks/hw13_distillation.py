"""HW13: knowledge distillation vs cross entropy alone, for the same student, over several seeds, on the demo data
(or on food-11 with --data_dir). Each run is a normal `fit` of the default recipe (homework/configs/hw13.yaml) in
its own process, in one folder; the table (best validation accuracy per seed, mean and spread) is printed and
written as `distillation.md` there, and `size_accuracy.png` of the last run shows them all.

    python benchmarks/hw13_distillation.py                       # CE vs KD, seeds 1 2 3, demo data
    python benchmarks/hw13_distillation.py --seeds 1 2 3 --losses CE KD FitNet -- --trainer.max_epochs 40
"""
import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--losses", nargs="+", default=["CE", "KD"], choices=["CE", "KD", "FitNet"])
    parser.add_argument("--data_dir", default=None, help="food-11 for HW13; default: the demo set")
    parser.add_argument("--out", default=None, help="the runs' folder; default: runs/hw13/<stamp>_distillation")
    parser.add_argument("rest", nargs="*", help="more options for every fit (after --)")
    args = parser.parse_args()
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or ROOT / "runs" / "hw13" / f"{stamp}_distillation")
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[float]] = {loss: [] for loss in args.losses}
    seconds: dict[str, list[float]] = {loss: [] for loss in args.losses}
    for seed in args.seeds:
        for loss in args.losses:  # interleaved, so a busy machine slows both alike
            command = [sys.executable, str(ROOT / "homework" / "hw13.py"), "fit", "--seed_everything", str(seed),
                       "--model.loss_fn_type", loss, "--trainer.default_root_dir", str(out),
                       "--trainer.enable_progress_bar", "false", "--diagnose", "false",
                       *(["--data.data_dir", args.data_dir] if args.data_dir else []), *args.rest]
            before = {d for d in out.iterdir() if d.is_dir()}
            start = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT)
            seconds[loss].append(time.perf_counter() - start)
            run_dir, = [d for d in out.iterdir() if d.is_dir() and d not in before]
            record = json.loads((run_dir / "run.json").read_text())
            scores[loss].append(record["best_score"])
            print(f"seed {seed} {loss}: best val_acc {record['best_score']:.4f} "
                  f"({seconds[loss][-1]:.0f} s, {run_dir.name})",
                  flush=True)
    rows = ["| loss | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | std | mean wall time (s) |",
            "|---|" + "---|" * len(args.seeds) + "---|---|---|"]
    for loss in args.losses:
        values = scores[loss]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(f"| {loss} | " + " | ".join(f"{v:.4f}" for v in values)
                    + f" | {statistics.mean(values):.4f} | {spread:.4f} | {statistics.mean(seconds[loss]):.0f} |")
    table = "\n".join(rows)
    (out / "distillation.md").write_text(f"`{' '.join(sys.argv)}`, {stamp}\n\n{table}\n")
    print(f"\n{table}\n\nRuns: {out}")


if __name__ == "__main__":
    main()
