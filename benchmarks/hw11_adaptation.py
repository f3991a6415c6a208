"""HW11 on the demo set: does adaptation help? The default recipe (DANN lambda schedule) against source-only
training (`--model.lamb 0`: the same networks, augmentation and budget) over several seeds, each run's target
accuracy read at the checkpoint the label-free `val_score` picked (`validate --ckpt_path <run>`), and at the
last epoch. Prints a Markdown table (docs/hw11.md has one).

    python benchmarks/hw11_adaptation.py [--seeds 0 1 2] [--max_epochs 30] [--recipes default source_only sample]
"""
import argparse
import statistics
import time

from homework import hw11
from homework.lab.compare import recipe_flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max_epochs", type=int, default=None, help="default: each recipe's own")
    parser.add_argument("--recipes", nargs="+", default=["default", "source_only"])
    parser.add_argument("--extra", default="", help="more options for every fit, as command-line text")
    args = parser.parse_args()
    rows = {}
    for seed in args.seeds:
        for recipe in args.recipes:
            options = {"seed_everything": seed, "trainer.enable_progress_bar": False, "diagnose": False}
            if args.max_epochs:
                options["trainer.max_epochs"] = args.max_epochs
            start = time.perf_counter()
            fit = hw11.fit(" ".join(recipe_flags("hw11", recipe) + [args.extra]), **options)
            seconds = time.perf_counter() - start
            best = hw11.validate(ckpt_path=fit.run_dir, trainer__enable_progress_bar=False).scores
            rows.setdefault(recipe, []).append((best["val_target_acc"], fit.scores["val_target_acc"],
                                                best["val_acc"], best["val_domain_acc"], seconds))
            print(f"seed {seed} {recipe}: target acc {best['val_target_acc']:.4f} at the picked checkpoint, "
                  f"{fit.scores['val_target_acc']:.4f} at the last epoch ({seconds:.0f} s)", flush=True)
    print("\n| recipe | target acc (picked by val_score) | target acc (last epoch) | source val acc | "
          "domain classifier acc | seconds per fit |\n|---|---|---|---|---|---|")
    for recipe, values in rows.items():
        cells = []
        for column in zip(*values):
            mean = statistics.mean(column)
            std = statistics.stdev(column) if len(column) > 1 else 0.0
            cells.append(f"{mean:.3f} ± {std:.3f}" if mean < 10 else f"{mean:.0f}")
        print(f"| {recipe} | " + " | ".join(cells) + " |")
    print(f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}); each seed: " +
          "; ".join(f"{r}: " + ", ".join(f"{v[0]:.3f}" for v in vals) for r, vals in rows.items()))


if __name__ == "__main__":
    main()
