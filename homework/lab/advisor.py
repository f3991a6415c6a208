"""The "practical methodology" lecture applied to a finished fit: a short diagnosis from the run's own numbers.

The lecture's recipe: is the *training* loss low? Low means lower than what a simple model reaches, so the
advisor fits one on the same training split (`fit_reference`, reference.py). A network whose training value is
not clearly below it has model bias or optimization trouble; one whose training value is low but validation
value high is overfitting. And a bigger model with a higher training loss than a smaller one points to
optimization: the advisor compares with the student's earlier runs of the same homework, data and split
(run.json; model_sizes.py).

The simple reference a training value is compared with (a linear model that cannot memorize the training
split, fitted on what each homework's DataModule gives, `reference_data`) is in reference.py.
Where the reference does no better than always the majority class (or the training mean) on held-out rows,
and the network neither, the data gives nothing to learn: the labels look unpredictable from these features.
That is said instead of any bias/optimization verdict.

Thresholds (module constants, tested on constructed runs in tests/test_advisor.py):
  BIAS_MARGIN  0.10  the training value not 10% below the reference's held-out value: model bias or optimization
                     trouble; above it outright: optimization (the network can represent the linear model);
  GAP_RATIO    2.0   final validation value at least twice the final training value: overfitting;
  RISE         0.10  validation value 10% above its best by the end while the training value kept falling:
                     overfitting (the curve turned), whatever the gap;
  LATE         0.10  the best validation epoch in the last 10% of epochs, and the validation value 1%
                     (STILL_FALLING) lower than 10% of the epochs before: still improving, train longer
                     (twice the epochs run);
  MISMATCH     2.0   validation already twice the training value after the first epoch (before any
                     overfitting), or below half of it at every epoch: the splits may differ in distribution.
Advice comes from each homework's remedies (datamodules/lab_hooks.py) applied to the run's own settings, so it never
repeats a setting already in effect.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from callbacks import LearningCurvePlot
from datamodules.errors import DataError
from datamodules.lab_hooks import Remedy, advice, flatten_settings
from homework import runs
from homework.command_line import option
from homework.lab.model_sizes import RunSize, comparable_sizes, compare_sizes
from homework.lab.reference import Reference, clearly_better, reference_score

BIAS_MARGIN = 0.10
GAP_RATIO = 2.0
RISE = 0.10
LATE = 0.10
STILL_FALLING = 0.01
MISMATCH = 2.0

#: Remedies every homework shares: they are the command line's, not a homework's.
COMMON_REMEDIES = (
    Remedy("overfitting", "earlier stopping", "--early_stopping.patience", times=0.5),
    Remedy("overfitting", "more data (or augmentation)"),
)
NOTHING_TO_LEARN = ["check that each label belongs to its input (same order and ids in the training files)",
                    "features that carry the information (the reference saw: {features})"]


# --- the diagnosis ----------------------------------------------------------------------------
@dataclass
class Diagnosis:
    # "nothing to learn" | "optimization trouble" | "model bias or optimization trouble" | "overfitting" | "healthy"
    verdict: str
    evidence: list[str]  # the statements the verdict rests on, each with its numbers
    remedies: list[str]  # the lecture's remedies as flags, derived from the run's own settings
    notes: list[str] = field(default_factory=list)  # still improving, mismatch, what was not checked


def _series(history: dict, name: str) -> list[tuple[int, float]]:
    return [(int(e), float(v)) for e, v in history.get(name, []) if math.isfinite(float(v))]


def curves(history: dict, reference: Reference | None) -> tuple[str, list, list] | None:
    """(quantity, train, val) per epoch, lower is better: error rates where accuracies were logged (and the
    reference is in error rates or absent), else the losses."""
    acc_train, acc_val = _series(history, "train_acc"), _series(history, "val_acc")
    if acc_train and acc_val and (reference is None or reference.quantity == "error rate"):
        return "error rate", [(e, 1 - v) for e, v in acc_train], [(e, 1 - v) for e, v in acc_val]
    train, val = _series(history, "train_loss"), _series(history, "val_loss")
    if not train or not val:
        return None
    return ("MSE" if reference is not None and reference.quantity == "MSE" else "loss"), train, val


def _falling(series: list[tuple[int, float]]) -> tuple[int, float, float] | None:
    """(epochs looked back, value then, value now) when `series` still fell STILL_FALLING over its last LATE."""
    window = max(1, math.ceil(LATE * len(series)))
    if len(series) <= window:
        return None
    then, now = series[-1 - window][1], series[-1][1]
    return (window, then, now) if now < (1 - STILL_FALLING) * then else None


def train_longer(series: list[tuple[int, float]], name: str, settings: dict, run_dir: Path | None = None,
                 stopped_early: bool = False) -> str | None:
    """"train longer", with a number from the epochs actually run, where `series` was still falling at the end."""
    fall = _falling(series)
    if fall is None:
        return None
    window, then, now = fall
    ran, planned = series[-1][0] + 1, settings.get("trainer.max_epochs")
    why = f"{name} still fell {1 - now / then:.1%} over the last {window} epoch(s), {then:.4g} -> {now:.4g}"
    if stopped_early:
        patience = settings.get("early_stopping.patience")
        more = f"--early_stopping.patience {2 * patience}" if isinstance(patience, int) else "--early_stopping.patience"
        return f"more patience: {more} (early stopping ended the run after {ran} epochs while {why})"
    if isinstance(planned, int) and 0 < ran < planned:  # stopped before its planned end (interrupted, max_time)
        where = f" {run_dir}" if run_dir is not None else ""
        # a time or step limit that ended it must be lifted, or --resume refuses a finished run
        lift = "".join(f" --trainer.{key} {off}" for key, off in (("max_time", "null"), ("max_steps", "-1"))
                       if settings.get(f"trainer.{key}") not in (None, -1))
        return f"train to the planned {planned} epochs (it stopped after {ran}; {why}): fit --resume{where}{lift}"
    return f"train longer: --trainer.max_epochs {2 * ran} (twice the {ran} epochs run; {why})"


@dataclass
class _Curves:
    """What the checks read of a run's curves (lower is better): the ends, the best validation epoch."""

    quantity: str
    train: list[tuple[int, float]]
    val: list[tuple[int, float]]

    def __post_init__(self):
        self.t_end, self.v_end = self.train[-1][1], self.val[-1][1]
        self.best_epoch, self.v_best = min(self.val, key=lambda p: p[1])
        self.train_at = dict(self.train)
        self.ends = (f"final training {self.quantity} {self.t_end:.4g} (epoch {self.train[-1][0]}), "
                     f"validation {self.v_end:.4g}")


def diagnose(history: dict, reference: Reference | None, remedies=(), settings: dict | None = None,
             this: RunSize | None = None, sizes: list[RunSize] = (), why_no_reference: str = "",
             run_dir: Path | None = None, stopped_early: bool = False) -> Diagnosis | None:
    """The verdict from the per-epoch history (`LearningCurvePlot.history`: name -> [(epoch, value)]), the
    reference, and earlier runs' sizes (see the module docstring for the rules). `remedies`: the homework's
    `Remedy` entries; `settings`: the run's flattened config. None: no training and validation curves.
    The checks run in the lecture's order; the first that gives a verdict decides it."""
    found = curves(history, reference)
    if found is None:
        return None
    c = _Curves(*found)
    own = tuple(remedies)
    settings, remedies = settings or {}, own + COMMON_REMEDIES
    notes, evidence = [], []
    bar, verdict, fix = _check_learnable(c, reference, evidence, notes)
    longer = train_longer(c.train, f"training {c.quantity}", settings, run_dir, stopped_early)
    if verdict is None and this is not None:
        verdict, fix = compare_sizes(this, sizes, remedies, settings, evidence, notes)
    if verdict is None and bar is not None:
        verdict, fix = _check_bias(c, bar, remedies, settings, evidence)
    if verdict == "optimization trouble" and longer:
        fix.insert(0, longer)
    if verdict is None:
        verdict, fix = _check_overfitting(c, bar, remedies, settings, evidence)
    notes += _notes(c, verdict, fix, bar, settings, run_dir)
    if not own and verdict not in ("healthy", "nothing to learn"):
        notes.append("this homework declares no remedies of its own (`remedies` on its task or DataModule, "
                     "datamodules/lab_hooks.py), so only the command line's are suggested")
    if reference is None:
        notes.append(why_no_reference or "no simple reference model for this homework, so model bias was not checked")
    return Diagnosis(verdict, evidence, fix, notes)


def _check_learnable(c: _Curves, reference: Reference | None, evidence: list, notes: list):
    """(the bar the training value is held to, "nothing to learn" or None, its remedies): the reference sets a
    bar only in the network's quantity and where it found something to learn."""
    bar = reference if reference is not None and reference.quantity == c.quantity else None
    if reference is not None and bar is None:
        notes.append(f"the network logs no {reference.quantity}, so it was not compared with the reference")
    if bar is None or bar.learnable:
        return bar, None, []
    quantity = c.quantity
    if clearly_better(c.v_best, bar.baseline, bar.val_rows, quantity):
        notes.append(f"the reference found nothing to learn ({quantity} {bar.heldout:.4g} held out vs "
                     f"{bar.baseline_name}'s {bar.baseline:.4g}) but the network did (best validation "
                     f"{c.v_best:.4g}): what it learned is not linear in these features, so the reference sets no "
                     f"bar and model bias was not checked against it")
        return None, None, []
    evidence.append(f"the reference ({bar.model}) reaches {quantity} {bar.heldout:.4g} on held-out rows, no "
                    f"better than {bar.baseline_name} ({bar.baseline:.4g}): the labels look unpredictable from "
                    f"these features")
    evidence.append(f"the network's best validation {quantity} {c.v_best:.4g} (epoch {c.best_epoch}) is no better "
                    f"either")
    if clearly_better(c.t_end, bar.baseline, bar.train_rows, quantity):
        evidence.append(f"its training {quantity} {c.t_end:.4g} comes from memorizing the training rows: it does "
                        f"not carry over to the validation split")
    return None, "nothing to learn", [line.format(features=bar.features) for line in NOTHING_TO_LEARN]


def _check_bias(c: _Curves, bar: Reference, remedies, settings: dict, evidence: list):
    """("optimization trouble" | "model bias or optimization trouble", their remedies) where the training value
    is not BIAS_MARGIN below what the simple model reaches on held-out rows; else (None, [])."""
    if not c.t_end > (1 - BIAS_MARGIN) * bar.heldout:
        return None, []
    above = c.t_end > bar.heldout
    evidence.append(f"training {c.quantity} {c.t_end:.4g} is {'above' if above else 'not 10% below'} what a simple "
                    f"model reaches on held-out rows, {bar.heldout:.4g} ({bar.model})")
    if above:
        evidence.append("the network can represent that simple model, so a training value above it points to "
                        "optimization, not model bias")
        return "optimization trouble", advice("optimization", remedies, settings)
    return ("model bias or optimization trouble",
            advice("optimization", remedies, settings) + advice("bias", remedies, settings))


def _check_overfitting(c: _Curves, bar: Reference | None, remedies, settings: dict, evidence: list):
    """("overfitting", its remedies) where validation ends GAP_RATIO above training or rose RISE from its best
    while training fell; else ("healthy", [])."""
    quantity, t_end, v_end, v_best, best_epoch = c.quantity, c.t_end, c.v_end, c.v_best, c.best_epoch
    rose = best_epoch < c.val[-1][0] and v_end >= (1 + RISE) * v_best and t_end < c.train_at.get(best_epoch, math.inf)
    gap = v_end >= GAP_RATIO * t_end and v_end > 0
    if bar is not None:
        evidence.append(f"training {quantity} {t_end:.4g} is clearly below what a simple model reaches on held-out "
                        f"rows, {bar.heldout:.4g} ({bar.model}), so neither model bias nor optimization holds it "
                        f"back")
    if not (gap or rose):
        evidence.append(f"{c.ends}: gap {v_end / max(t_end, 1e-12):.2f}x (overfitting from {GAP_RATIO:g}x), "
                        f"validation within {RISE:.0%} of its best {v_best:.4g} (epoch {best_epoch})")
        return "healthy", []
    if gap:
        ratio = v_end / max(t_end, 1e-12)
        times = f"{ratio:.1f}x" if ratio < 1000 else "over 1000x"  # (a memorised training set: ~1e-9)
        evidence.append(f"{c.ends}: validation is {times} training (threshold {GAP_RATIO:g}x)")
    if rose:
        evidence.append(f"validation {quantity} was best at epoch {best_epoch} ({v_best:.4g}) and rose "
                        f"{v_end / v_best - 1:.0%} by the end while training {quantity} fell "
                        f"({c.train_at[best_epoch]:.4g} -> {t_end:.4g}); early stopping keeps epoch "
                        f"{best_epoch}'s weights")
    return "overfitting", advice("overfitting", remedies, settings)


def _notes(c: _Curves, verdict: str, fix: list, bar: Reference | None, settings: dict,
           run_dir: Path | None) -> list[str]:
    """What holds whatever the verdict: still improving at the end, a mismatch of the splits, a reference that
    validates better than the network."""
    notes, quantity, val, train_at = [], c.quantity, c.val, c.train_at
    # still improving at the end: the best validation epoch is among the last ones and validation still falls
    window = max(1, math.ceil(LATE * len(val)))
    if verdict != "nothing to learn" and len(val) > window and c.best_epoch >= val[-window][0]:
        still = train_longer(val, f"validation {quantity}", settings, run_dir)
        if still is not None and not any(line.startswith(("train", "more patience")) for line in fix):
            notes.append(f"still improving at the end (best epoch {c.best_epoch} of {val[-1][0] + 1}): {still}")
    first_train, first_val = train_at.get(val[0][0]), val[0][1]
    if first_train is not None and first_train > 0 and first_val >= MISMATCH * first_train:
        notes.append(f"mismatch? validation {quantity} {first_val:.4g} was already {first_val / first_train:.1f}x "
                     f"training ({first_train:.4g}) after the first epoch, before any overfitting: check that the "
                     f"validation split comes from the same distribution as the training split")
    pairs = [(train_at[e], v) for e, v in val if e in train_at]
    if pairs and all(v * MISMATCH <= t for t, v in pairs):
        notes.append(f"validation {quantity} stayed below half the training {quantity} at every epoch (last "
                     f"{c.v_end:.4g} vs {c.t_end:.4g}): dropout/augmentation in training only, or a validation split "
                     f"easier than the training split (mismatch)")
    if bar is not None and bar.heldout < c.v_best:
        notes.append(f"the reference validates better than the network's best ({bar.heldout:.4g} vs {c.v_best:.4g} "
                     f"at epoch {c.best_epoch}): a simpler model or fewer features may be the better submission")
    return notes


def format_diagnosis(d: Diagnosis, reference: Reference | None = None) -> str:
    """A few lines for the terminal and W&B: the verdict, its numbers, the remedies as flags, the notes."""
    lines = [f"Diagnosis (practical methodology): {d.verdict}"]
    lines += [f"  - {e}" for e in d.evidence]
    if d.remedies:
        lines.append("  try:")
        lines += [f"    {r}" for r in d.remedies]
    lines += [f"  note: {n}" for n in d.notes]
    if reference is not None:
        lines.append(f"  (reference: {reference.how()})")
    return "\n".join(lines)


# --- a fit's diagnosis, and any run's again ------------------------------------------------------
def run_settings(run_dir: Path, model_hparams: dict | None = None, data_hparams: dict | None = None) -> dict:
    """The run's settings as `section.name` -> value: its config.yaml, with the values the model and data
    resolved at run time over it (e.g. HW2's `concat_nframes` null -> 11 on the demo set)."""
    import yaml

    path = run_dir / "config.yaml"
    settings = flatten_settings(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    for section, hparams in (("model", model_hparams), ("data", data_hparams)):
        for key, value in (hparams or {}).items():
            if value is not None and (isinstance(value, (str, int, float, bool)) or (
                    isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value))):
                settings[f"{section}.{key}"] = list(value) if isinstance(value, tuple) else value
    return settings


def remedies_of(*owners) -> tuple[Remedy, ...]:
    """The remedies the task and the DataModule declare (classes or instances)."""
    return tuple(r for owner in owners for r in getattr(owner, "remedies", ()) or ())


def advise(trainer, model, datamodule, record=None) -> str | None:
    """What the CLI prints after a fit (and logs to W&B): the diagnosis, or None when there is nothing to
    say (no learning-curve history, no validation). `record`: the run's RunRecord, which keeps the reference
    (for `diagnose` later). The reference takes seconds on the training split."""
    curve = _curve(trainer)
    history = dict(curve.history) if curve is not None else None
    if not history:
        return None
    run_dir = Path(trainer.default_root_dir)
    reference, why = None, ""
    if "val_loss" in history or "val_acc" in history:
        try:
            reference, why = reference_score(datamodule)
        except Exception as err:  # the diagnosis goes on without it, and says so
            why = (f"the simple reference could not be fitted ({type(err).__name__}: {err}), so model bias was not "
                   f"checked")
    values = record.record if record is not None else {}
    if record is not None and reference is not None:
        record.add(trainer, reference=reference.as_dict())
    settings = run_settings(run_dir, dict(getattr(model, "hparams", {}) or {}),
                            dict(getattr(datamodule, "hparams", {}) or {}))
    this = RunSize.of("this run", values)
    sizes = comparable_sizes(run_dir, values) if this is not None else []
    diagnosis = diagnose(history, reference, remedies_of(model, datamodule), settings, this, sizes, why, run_dir,
                         curve.stopped_epoch is not None)
    return None if diagnosis is None else format_diagnosis(diagnosis, reference)


def _curve(trainer):
    return next((c for c in trainer.callbacks if isinstance(c, LearningCurvePlot)), None)


def learning_history(run_dir: Path, checkpoint: dict | None) -> tuple[dict, bool]:
    """A run's learning-curve history, and whether early stopping ended it: learning_curve.json (written at
    the end of a fit), else what its last checkpoint holds (a run still training, or killed: up to the epoch
    before its last checkpoint)."""
    import json

    path = run_dir / "learning_curve.json"
    state = None
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except ValueError:
            state = None
    if state is None and checkpoint is not None:
        states = (checkpoint.get("callbacks") or {}).items()
        state = next((v for k, v in states if k.startswith("LearningCurvePlot")), None)
    state = state or {}
    history = {k: [(int(e), float(v)) for e, v in points] for k, points in (state.get("history") or {}).items()}
    return history, state.get("stopped_epoch") is not None


def diagnose_run(run_dir: Path, model_class=None, datamodule_class=None) -> str:
    """The diagnosis of a finished (or running) fit from what its directory holds, without training:
    run.json (the reference fitted after the fit, sizes), config.yaml and the last checkpoint (settings),
    learning_curve.json (the history). Where run.json holds no reference (`--diagnose false`, an older run),
    it is fitted again on the run's data when `datamodule_class` is given."""
    import torch
    import yaml

    record = runs.read_record(run_dir)
    if record is None:
        raise DataError(f"diagnose: {run_dir} holds no run.json, so it is not a run directory of `fit`")
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False) if last.is_file() else None
    history, stopped_early = learning_history(run_dir, checkpoint)
    if not history:
        raise DataError(f"diagnose: run {run_dir} recorded no learning curve (no epoch finished)")
    checkpoint = checkpoint or {}
    settings = run_settings(run_dir, checkpoint.get("hyper_parameters"), checkpoint.get("datamodule_hyper_parameters"))
    reference, why = Reference.from_dict(record.get("reference")), ""
    if reference is None and datamodule_class is not None:
        data = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("data") or {} \
            if (run_dir / "config.yaml").is_file() else {}
        try:
            reference, why = reference_score(datamodule_class(**data))
        except (DataError, TypeError, ValueError) as err:
            why = f"the simple reference could not be fitted on the run's data ({err}), so model bias was not checked"
    elif reference is None:
        why = "run.json holds no reference (fit with --diagnose false, or an older run), so model bias was not checked"
    this = RunSize.of("this run", record)
    sizes = comparable_sizes(run_dir, record) if this is not None else []
    diagnosis = diagnose(history, reference, remedies_of(model_class, datamodule_class), settings, this, sizes, why,
                         run_dir, stopped_early)
    head = f"Run {run_dir} ({record.get('status')}, {record.get('epochs')} epochs)"
    return head + "\n" + (format_diagnosis(diagnosis, reference) if diagnosis else "no validation curve to diagnose")


def newest_run(root: Path) -> Path:
    """The newest run directory of `fit` under `root` (folds and compare variants included)."""
    fits = [d for d in runs.run_dirs(root) if (runs.read_record(d) or {}).get("command") == "fit"]
    if not fits:
        raise DataError(f"diagnose: no run of `fit` under '{root}'; train first, or name a run directory "
                        f"(python homework/hwN.py diagnose runs/hwN/<run>)")
    return max(fits, key=lambda d: (d / runs.RECORD).stat().st_mtime)


# --- the CLI's `diagnose` (wiring only: the work is diagnose_run) --------------------------------
@dataclass(frozen=True)
class Diagnosed:
    """What `diagnose` printed, and for which run."""

    run_dir: Path
    text: str


def diagnose_command(args: list[str], model_class, datamodule_class) -> Diagnosed:
    """`python homework/hwN.py diagnose [RUN_DIR | --run_dir RUN_DIR] [--trainer.default_root_dir DIR]`:
    print the diagnosis of RUN_DIR (default: the newest run of `fit` under runs/hwN) without training."""
    rest = args[args.index("diagnose") + 1:]
    if "--help" in rest or "-h" in rest:
        print(diagnose_command.__doc__.replace("hwN", datamodule_class.homework))
        raise SystemExit(0)
    given, root = option(rest, "--run_dir"), option(rest, "--trainer.default_root_dir")
    used = {i for found in (given, root) if found for i in (found[0], found[0] + ("=" not in rest[found[0]]))}
    positional = [a for i, a in enumerate(rest) if i not in used]
    unknown = [a for a in positional if a.startswith("-")]
    if unknown or len(positional) + (given is not None) > 1:
        raise DataError(f"diagnose takes one run directory (or --run_dir DIR) and --trainer.default_root_dir; "
                        f"got {' '.join(unknown or positional)}")
    run_dir = Path(given[1]) if given else Path(positional[0]) if positional else \
        newest_run(runs.root_dir(datamodule_class.homework, root[1] if root else None))
    if not run_dir.is_dir():
        raise DataError(f"diagnose: run directory '{run_dir}' does not exist")
    text = diagnose_run(run_dir, model_class, datamodule_class)
    print(text)
    return Diagnosed(run_dir, text)
