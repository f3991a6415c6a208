"""A small mutation check: does the suite fail when the code breaks in a realistic way?

Each mutant is one small change a maintainer could make by mistake (a comparison's direction, a clause dropped,
an option's default); it is applied to a fresh copy of the committed tree (`git archive HEAD`), and the tests
that should catch it run there. A mutant the tests still pass is a survivor: a test that pins the behaviour is
missing. The score (killed / all) is reported in docs/development.md; keep it from falling.

    python benchmarks/mutants.py            # every mutant (about 10 minutes on a loaded 2-core machine)
    python benchmarks/mutants.py 3 7        # mutants 3 and 7 only

Why a script and not mutmut: mutmut mutates every operator of a module and runs the whole suite per mutant,
hours here; these mutants are the changes the issue #24 audit found the suite blind to, plus one or two per
module it touched, each run against the few tests that should see it.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (file, the text replaced, its replacement, the tests that must fail, what it means for a student)
MUTANTS = [
    ("homework/runs/__init__.py", 'sign = -1 if comparable[0][1].get("mode") == "max" else 1', "sign = 1",
     ["tests/test_pinned.py::test_best_picks_the_best_score_in_the_models_direction"],
     "`best` ignores higher-is-better: HW2-HW5 could predict with the worst run"),
    ("homework/cli/main.py", '"early_stopping.mode": model.mode', '"early_stopping.mode": "min"',
     ["tests/test_pinned.py::test_early_stopping_and_checkpoints_follow_the_models_direction"],
     "early stopping minimises accuracy: runs stop after `patience` improving epochs"),
    ("models/translation.py", 'tokenize="zh"', 'tokenize="13a"',
     ["tests/test_pinned.py::test_bleu_counts_each_chinese_character_as_a_word"],
     "HW5's BLEU without Chinese tokenisation: about 0 unless exact"),
    ("homework/lab/advisor.py", "c.noise(v_best) \\\n        and train_fell", "c.noise(v_best)",
     ["tests/test_pinned.py::test_validation_rising_while_training_stays_is_not_overfitting"],
     "the advisor calls 'overfitting' when validation rises and training does not fall"),
    ("homework/lab/tune.py", "states=(TrialState.COMPLETE, TrialState.PRUNED,\n", "states=(TrialState.COMPLETE,\n",
     ["tests/test_pinned.py::test_a_pruned_trial_counts_toward_n_trials"],
     "tune reruns as many trials as were pruned"),
    ("datamodules/outputs.py", "    if option is not None:\n        why", "    if False:\n        why",
     ["tests/test_reliability.py::test_the_rule_in_one_place"],
     "a file the user named is moved aside silently instead of refused"),
    ("datamodules/outputs.py", "    if not path.exists() or known.get(path.name) == inputs:",
     "    if True:", ["tests/test_reliability.py::test_the_rule_in_one_place"],
     "a user's file is replaced"),
    ("datamodules/outputs.py", 'if path.suffix == ".ckpt":\n        return True',
     'if path.suffix == ".ckpt":\n        pass',
     ["tests/test_reliability.py::test_the_rule_in_one_place"],
     "a checkpoint can be an output target"),
    ("callbacks/submission.py", '"--submission.filename" if self.filename is not None else None', "None",
     ["tests/test_reliability.py::test_a_user_named_file_that_exists_is_refused_and_kept"],
     "predict writes beside the file the user named, without a word"),
    ("datamodules/disk.py", "    if torch_write_failed(err):", "    if False:",
     ["tests/test_reliability.py::test_a_full_disk_faked_at_the_checkpoint_write_is_one_line"],
     "a full disk while saving a checkpoint is torch's traceback"),
    ("homework/runs/__init__.py", "            if not ending:\n                raise",
     "            if True:\n                raise",
     ["tests/test_reliability.py::test_a_disk_that_fills_mid_fit_is_one_line_and_the_run_resumes"],
     "a full disk leaves run.json at `running`"),
    ("homework/runs/__init__.py", "trained_by is not None and trained_by != homework", "False",
     ["tests/test_reliability.py::test_another_homeworks_run_is_one_line_naming_it"],
     "--resume on another homework's run fails far later, on a setting"),
    ("datamodules/base.py", "if num_val == 0 or num_val == num_samples:", "if False:",
     ["tests/test_reliability.py::test_a_training_file_too_small_for_a_validation_split_is_one_line"],
     "a 3-row training file trains with an empty validation split"),
    ("homework/runs/limits.py", "    found = _INTERVAL.search(text)", "    found = None",
     ["tests/test_reliability.py::test_options_the_data_cannot_satisfy_are_one_line"],
     "--trainer.val_check_interval too large is Lightning's traceback"),
    ("callbacks/interrupt.py", "    return 128 + (_received if _received is not None else signal.SIGINT)",
     "    return 130", ["tests/test_preemption.py::test_sigterm_stops_predict_at_once_and_writes_nothing"],
     "SIGTERM exits as Ctrl-C does (130): a scheduler cannot tell the two apart"),
    ("homework/runs/__init__.py", 'if record.get("status") != "running" or still_training(run_dir) is not False:',
     "if True:", ["tests/test_preemption.py::test_a_fit_killed_without_a_word_reads_as_stopped_and_resumes"],
     "a run killed by SIGKILL or the OOM killer reads `running` for ever"),
    ("homework/runs/__init__.py", "    if not named or (run_dir / named).is_file():", "    if True:",
     ["tests/test_reliability.py::test_a_full_disk_faked_at_the_checkpoint_write_is_one_line"],
     "after a full disk, `predict --ckpt_path <run>` finds no best checkpoint (run.json names one never written)"),
    ("datamodules/atomic.py", "    if target.exists() and not made_here(target):", "    if False:",
     ["tests/test_reliability.py::test_a_users_folder_where_the_demo_set_goes_is_kept"],
     "a folder of the user's at data/hwN-demo is deleted and replaced by the demo set"),
    ("callbacks/plots.py", 'path = outputs.save_figure(fig, path, inputs, dpi=110, bbox_inches="tight")',
     'fig.savefig(path, dpi=110, bbox_inches="tight")',
     ["tests/test_reliability.py::test_a_users_file_where_a_picture_goes_is_kept_and_the_line_says_where_it_went"],
     "the learning curve replaces a picture of the user's"),
    ("homework/runs/tracking.py", "            tempfile.TemporaryFile(dir=folder).close()", "            pass",
     ["tests/test_tracking.py::test_a_read_only_wandb_folder_is_one_line_before_training"],
     "a read-only W&B folder is found only when W&B (quietly) fails"),
    ("homework/cli/main.py", '"save_to_log_dir": False', '"save_to_log_dir": True',
     ["tests/test_tracking.py::test_a_wandb_folder_of_the_users_keeps_its_files_and_the_run_its_config"],
     "the run's config.yaml replaces a user's file in W&B's folder"),
]


def run(index: int, mutant: tuple, tree: Path) -> bool:
    """True when the tests fail on the mutant (it is killed)."""
    path, old, new, tests, meaning = mutant
    source = (tree / path).read_text()
    if source.count(old) != 1:
        raise SystemExit(f"mutant {index}: {path} holds {source.count(old)} copies of {old!r} (the code moved: "
                         f"update the mutant)")
    (tree / path).write_text(source.replace(old, new))
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        result = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "-x", "-p", "no:cacheprovider",
                                 *tests], cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    finally:
        (tree / path).write_text(source)
    if result.returncode not in (0, 1):  # 1: a test failed; anything else (no such test, an import error) is no
        # verdict: a renamed test would otherwise count every mutant as killed
        raise SystemExit(f"mutant {index}: pytest could not run {tests} (exit {result.returncode}):\n"
                         f"{result.stdout[-2000:]}")
    return result.returncode == 1


def main(chosen: list[int]) -> None:
    picked = [(i, m) for i, m in enumerate(MUTANTS, 1) if not chosen or i in chosen]
    killed = 0
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        tree = Path(tmp)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
        subprocess.run(["tar", "-x"], cwd=tree, input=archive, check=True)
        for i, mutant in picked:
            started = time.monotonic()
            dead = run(i, mutant, tree)
            killed += dead
            print(f"{i:2d} {'killed  ' if dead else 'SURVIVED'} {time.monotonic() - started:5.0f} s  "
                  f"{mutant[0]}: {mutant[4]}", flush=True)
    print(f"mutation score: {killed}/{len(picked)} killed")
    raise SystemExit(0 if killed == len(picked) else 1)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Apply each mutant to a copy of HEAD and run its tests.")
    parser.add_argument("mutants", nargs="*", type=int, help=f"which mutants (1-{len(MUTANTS)}); none: all")
    main(parser.parse_args().mutants)
