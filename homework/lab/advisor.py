"""The "practical methodology" lecture applied to a finished fit: a short diagnosis from the run's own numbers.

The lecture's recipe: is the *training* loss low? Low means lower than what a simple model reaches, so the
advisor fits one on the same training split (`fit_reference`, reference.py). A network whose training value is
not clearly below it has model bias or optimization trouble; one whose training value is low but validation
value high is overfitting. And a bigger model with a higher training loss than a smaller one points to
optimization: the advisor compares with the student's earlier runs of the same homework, data and split
(run.json; model_sizes.py).

The homework's own metric, the one that picks the checkpoint (the task's `monitor`/`mode`: val_mse, val_acc,
val_bleu, val_auroc, ...), is what "best", "still improving" and "turned" are read in; the training and
validation curves the lecture compares are error rates (1 - accuracy) where accuracies are logged, else losses.
A homework may also score a reference model itself in that metric (`DataModule.reference_score`,
datamodules/lab_hooks.py: a baseline to beat, or a ceiling such as a teacher); where it gives no reference of
either kind, the diagnosis says so in one line.

The simple reference a training value is compared with (a linear model that cannot memorize the training
split, fitted on what each homework's DataModule gives, `reference_data`) is in reference.py.
Where the reference does no better than always the majority class (or the training mean) on held-out rows,
and the network neither, the data gives nothing to learn: the labels look unpredictable from these features.
That is said instead of any bias/optimization verdict.

Evidence first: a diagnosis says what it rests on (epochs, validation samples), gives no verdict from fewer than
MIN_EPOCHS validated epochs, and where the validation value is an error rate on n samples, a change smaller than
two standard errors, 2·sqrt(p(1-p)/n), is noise: it neither turns a curve nor keeps one improving.

Thresholds (module constants, tested on constructed runs in tests/test_advisor.py):
  MIN_EPOCHS   3     fewer validated epochs: "too early to tell", and the only advice is to train longer;
  BIAS_MARGIN  0.10  the training value not 10% below the reference's held-out value: model bias or optimization
                     trouble; above it outright: optimization (the network can represent the linear model);
  GAP_RATIO    2.0   final validation value at least twice the final training value: overfitting;
  RISE         0.10  validation value 10% above its best by the end while the training value kept falling:
                     overfitting (the curve turned), whatever the gap; for a metric of its own (BLEU, ROC AUC),
                     10% worse than its best;
  LATE         0.10  the best epoch of the checkpoint's metric in the last 10% of epochs, and that metric 1%
                     (STILL_FALLING) better than 10% of the epochs before: still improving, train longer
                     (twice the epochs run);
  MISMATCH     2.0   validation already twice the training value after the first epoch (before any
                     overfitting), or below half of it at every epoch: the splits may differ in distribution.
Advice comes from each homework's remedies (datamodules/lab_hooks.py) applied to the run's own settings, so it never
repeats a setting already in effect; one diagnosis never advises two ways on one knob (`conflicts`).
"""

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from callbacks import LearningCurvePlot
from datamodules.errors import DataError
from datamodules.lab_hooks import ReferenceScore, Remedy, advice, flatten_settings
from homework import runs
from homework.command_line import option
from homework.lab.model_sizes import RunSize, comparable_sizes, compare_sizes
from homework.lab.reference import NO_SIMPLE_REFERENCE as NO_REFERENCE, Reference, clearly_better, own_reference, \
    reference_score

BIAS_MARGIN = 0.10
GAP_RATIO = 2.0
RISE = 0.10
LATE = 0.10
STILL_FALLING = 0.01
MISMATCH = 2.0
MIN_EPOCHS = 3
NOISE_SE = 2.0  # standard errors a change of a validation error rate must exceed to count

EARLIER_STOPPING = Remedy("overfitting", "earlier stopping", "--early_stopping.patience", times=0.5)
#: Remedies every homework shares: they are the command line's, not a homework's. (Words without an option, such
#: as "more data", are left to the homeworks that have one: HW1's --data.val_ratio, HW3's augmentation.)
COMMON_REMEDIES = (EARLIER_STOPPING,)
NOTHING_TO_LEARN = ["check that each label belongs to its input (same order and ids in the training files)",
                    "features that carry the information (the reference saw: {features})"]
#: Advice that lengthens training, and advice that shortens it: never both in one diagnosis.
LONGER = ("train longer", "train to the planned", "more patience")
SHORTER = ("earlier stopping",)


# --- the diagnosis ----------------------------------------------------------------------------
@dataclass
class Diagnosis:
    # "too early to tell" | "nothing to learn" | "optimization trouble" | "model bias or optimization trouble"
    # | "overfitting" | "healthy"
    verdict: str
    evidence: list[str]  # the statements the verdict rests on, each with its numbers
    remedies: list[str]  # the lecture's remedies as flags, derived from the run's own settings
    notes: list[str] = field(default_factory=list)  # still improving, mismatch, references, what was not checked
    basis: list[str] = field(default_factory=list)  # what it rests on: epochs, validation samples, the metric


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


@dataclass
class _Curves:
    """What the checks read of a run's curves (lower is better): the ends, the best validation epoch, and how
    much of a change is noise (`val_samples`: the validation split's size, where known)."""

    quantity: str
    train: list[tuple[int, float]]
    val: list[tuple[int, float]]
    val_samples: int | None = None

    def __post_init__(self):
        self.t_end, self.v_end = self.train[-1][1], self.val[-1][1]
        self.best_epoch, self.v_best = min(self.val, key=lambda p: p[1])
        self.train_at = dict(self.train)
        self.ends = (f"final training {self.quantity} {self.t_end:.4g} (epoch {self.train[-1][0]}), "
                     f"validation {self.quantity} {self.v_end:.4g}")

    def noise(self, value: float) -> float:
        """How far a validation error rate near `value` moves by chance: NOISE_SE standard errors on the
        validation samples (at least one sample's worth of p). 0 for losses: their spread is not known here."""
        n = self.val_samples
        if self.quantity != "error rate" or not n:
            return 0.0
        p = min(max(value, 1 / n), 1 - 1 / n)
        return NOISE_SE * math.sqrt(p * (1 - p) / n)


@dataclass
class _Watched:
    """The series that picks the checkpoint, as "best", "still improving" and "turned" read it: the
    validation curve itself where the task's monitor is it (val_acc as an error rate, val_loss), else the
    monitor in its own direction (val_bleu, val_auroc: higher is better)."""

    name: str  # "validation error rate", "val_bleu"
    mode: str  # "min" | "max"
    series: list[tuple[int, float]]
    noise: Callable[[float], float]
    own: bool  # the monitor is not the validation curve itself

    def __post_init__(self):
        pick = min if self.mode == "min" else max
        self.best_epoch, self.best = pick(self.series, key=lambda p: p[1])  # (the first best: the checkpoint's)

    def gain(self, then: float, now: float) -> float:
        """How much better `now` is than `then` (negative: worse)."""
        return then - now if self.mode == "min" else now - then


def _watched(c: _Curves, history: dict, monitor: str | None, mode: str | None) -> _Watched:
    own = _series(history, monitor) if monitor else []
    same = (monitor == "val_acc" and c.quantity == "error rate") or monitor in ("val_loss", None) or not own or \
        [v for _, v in own] == [v for _, v in _series(history, "val_loss")] and c.quantity != "error rate"
    if same or mode not in ("min", "max"):
        return _Watched(f"validation {c.quantity}", "min", c.val, c.noise, False)
    return _Watched(monitor, mode, own, lambda value: 0.0, True)


def _improving(w: _Watched) -> tuple[int, float, float, bool] | None:
    """(epochs looked back, value then, value now, beyond noise) where the checkpoint's metric still got better
    by STILL_FALLING over the last LATE of the epochs and its best epoch is among them; None otherwise."""
    series = w.series
    window = max(1, math.ceil(LATE * len(series)))
    if len(series) <= window or w.best_epoch < series[-window][0]:
        return None
    then, now = series[-1 - window][1], series[-1][1]
    if not w.gain(then, now) > STILL_FALLING * abs(then):
        return None
    return window, then, now, w.gain(then, now) > w.noise(now)


def _falling(series: list[tuple[int, float]]) -> tuple[int, float, float] | None:
    """(epochs looked back, value then, value now) when `series` (lower is better) still fell STILL_FALLING over
    its last LATE."""
    window = max(1, math.ceil(LATE * len(series)))
    if len(series) <= window:
        return None
    then, now = series[-1 - window][1], series[-1][1]
    return (window, then, now) if now < (1 - STILL_FALLING) * then else None


def train_longer(series: list[tuple[int, float]], name: str, settings: dict, run_dir: Path | None = None,
                 stopped_early: bool = False, fall: tuple[int, float, float] | None = None) -> str | None:
    """"train longer", with a number from the epochs actually run, where `series` was still falling at the end
    (`fall`: (epochs looked back, then, now) when already found, in any direction)."""
    fall = fall or _falling(series)
    if fall is None:
        return None
    window, then, now = fall[:3]
    ran, planned = series[-1][0] + 1, settings.get("trainer.max_epochs")
    change = (now - then) / abs(then) if then else math.inf
    why = (f"{name} still {'fell' if change < 0 else 'rose'} {abs(change):.1%} over the last {window} epoch(s), "
           f"{then:.4g} -> {now:.4g}")
    if stopped_early:
        patience = settings.get("early_stopping.patience")
        more = f"--early_stopping.patience {2 * patience}" if isinstance(patience, int) else "--early_stopping.patience"
        return f"more patience: {more} (early stopping ended the run after {ran} epochs while {why})"
    if isinstance(planned, int) and 0 < ran < planned:  # stopped before its planned end (interrupted, max_time)
        return f"train to the planned {planned} epochs (it stopped after {ran}; {why}): {_resume(settings, run_dir)}"
    return f"train longer: --trainer.max_epochs {2 * ran} (twice the {ran} epochs run; {why})"


def _resume(settings: dict, run_dir: Path | None) -> str:
    """The command that finishes a run stopped before its planned epochs: a time or step limit that ended it
    must be lifted, or --resume refuses a finished run."""
    where = f" {run_dir}" if run_dir is not None else ""
    lift = "".join(f" --trainer.{key} {off}" for key, off in (("max_time", "null"), ("max_steps", "-1"))
                   if settings.get(f"trainer.{key}") not in (None, -1))
    return f"fit --resume{where}{lift}"


def diagnose(history: dict, reference: Reference | None, remedies=(), settings: dict | None = None,
             this: RunSize | None = None, sizes: list[RunSize] = (), why_no_reference: str = "",
             run_dir: Path | None = None, stopped_early: bool = False, monitor: str | None = None,
             mode: str | None = None, val_samples: int | None = None,
             score: ReferenceScore | None = None) -> Diagnosis | None:
    """The verdict from the per-epoch history (`LearningCurvePlot.history`: name -> [(epoch, value)]), the
    references, and earlier runs' sizes (see the module docstring for the rules). `remedies`: the homework's
    `Remedy` entries; `settings`: the run's flattened config; `monitor`/`mode`: the metric that picks the
    checkpoint (the task's); `val_samples`: the validation split's size; `score`: the reference the homework
    scored itself. None: no training and validation curves. The checks run in the lecture's order; the first
    that gives a verdict decides it."""
    found = curves(history, reference)
    if found is None:
        return None
    c = _Curves(*found, val_samples=val_samples)
    w = _watched(c, history, monitor, mode)
    own = tuple(remedies)
    settings, remedies = settings or {}, own + COMMON_REMEDIES
    notes, evidence = [], []
    basis = _basis(c, w, history, monitor, mode)
    if len(c.val) < MIN_EPOCHS:
        return _too_early(c, settings, stopped_early, basis, reference, score, why_no_reference)
    bar, verdict, fix = _check_learnable(c, reference, evidence, notes)
    longer = train_longer(c.train, f"training {c.quantity}", settings, run_dir, stopped_early)
    if verdict is None and this is not None:
        verdict, fix = compare_sizes(this, sizes, remedies, settings, evidence, notes)
    if verdict is None and bar is not None:
        verdict, fix = _check_bias(c, bar, remedies, settings, evidence)
    if verdict == "optimization trouble" and longer:
        fix.insert(0, longer)
    turned = False
    if verdict is None:
        verdict, fix, turned = _check_overfitting(c, w, bar, remedies, settings, evidence)
    said = False  # the homework's reference decided the verdict (and the evidence says so)
    if verdict == "healthy" and score is not None:
        verdict, fix = _check_score(w, score, monitor, remedies, settings, evidence)
        said = verdict != "healthy"
    notes += _notes(c, w, verdict, fix, bar, settings, run_dir, stopped_early, turned)
    notes += [] if said else _score_notes(w, score, monitor)
    if not own and verdict not in ("healthy", "nothing to learn"):
        notes.append("this homework declares no remedies of its own, so only the command line's are suggested")
    if reference is None and (score is None or score.ceiling):
        notes.append(why_no_reference or NO_REFERENCE)
    fix, notes = _without_conflicts(fix, notes, settings)
    return Diagnosis(verdict, evidence, fix, notes, basis)


def _basis(c: _Curves, w: _Watched, history: dict, monitor: str | None, mode: str | None) -> list[str]:
    """What the diagnosis rests on: epochs and validation samples (and what noise means there), and the metric
    that picks the checkpoint with its best value, named."""
    epochs = len(c.val)
    line = f"based on {epochs} validated epoch{'s' if epochs != 1 else ''}"
    if c.val_samples:
        line += f" and {c.val_samples:,} validation sample{'s' if c.val_samples != 1 else ''}"
    if c.val_samples and c.quantity == "error rate":
        line += (f" (there a validation error rate near {c.v_best:.2g} moves by up to {c.noise(c.v_best):.2g} "
                 f"by chance: two standard errors)")
    else:  # (a loss's or BLEU's spread over samples is not logged: said, so no one reads more into it)
        line += (f" (how far {w.name if w.own else f'the validation {c.quantity}'} moves by chance is not known "
                 f"here: a small change between epochs may be noise)")
    lines = [line]
    points = _series(history, monitor) if monitor else []
    if points and mode in ("min", "max"):
        epoch, best = (min if mode == "min" else max)(points, key=lambda p: p[1])
        lines.append(f"the checkpoint's metric: {monitor} ({'higher' if mode == 'max' else 'lower'} is better), "
                     f"best {best:.4g} at epoch {epoch}" +
                     ("; the curves below are error rates, 1 - accuracy (lower is better)"
                      if c.quantity == "error rate" else ""))
    elif c.quantity == "error rate":
        lines.append("the curves below are error rates, 1 - accuracy (lower is better)")
    return lines


def _too_early(c: _Curves, settings: dict, stopped_early: bool, basis: list, reference: Reference | None,
               score: ReferenceScore | None, why_no_reference: str) -> Diagnosis:
    """Fewer than MIN_EPOCHS validated epochs: no verdict, only the numbers and "train longer"."""
    ran = c.val[-1][0] + 1
    evidence = [f"only {len(c.val)} validated epoch{'s' if len(c.val) != 1 else ''}: fewer than {MIN_EPOCHS} say "
                f"nothing firm about model bias, optimization or overfitting", c.ends]
    if stopped_early:
        patience = settings.get("early_stopping.patience")
        more = f"--early_stopping.patience {max(MIN_EPOCHS, 2 * patience)}" if isinstance(patience, int) \
            else "--early_stopping.patience"
        fix = [f"more patience: {more} (early stopping ended the run after {ran} epochs)"]
    else:
        fix = [f"train longer: --trainer.max_epochs {max(MIN_EPOCHS, 2 * ran)} (then the curves can be read)"]
    notes = [] if reference is not None or (score is not None and not score.ceiling) else \
        [why_no_reference or NO_REFERENCE]
    return Diagnosis("too early to tell", evidence, fix, notes, basis)


def _check_learnable(c: _Curves, reference: Reference | None, evidence: list, notes: list):
    """(the bar the training value is held to, "nothing to learn" or None, its remedies): the reference sets a
    bar only in the network's quantity and where it found something to learn."""
    bar = reference if reference is not None and reference.quantity == c.quantity else None
    if reference is not None and bar is None:
        notes.append(f"the network logs no {reference.quantity}, so it was not compared with the simple reference")
    if bar is None or bar.learnable:
        return bar, None, []
    quantity = c.quantity
    if clearly_better(c.v_best, bar.baseline, bar.val_rows, quantity):
        notes.append(f"the simple reference found nothing to learn (validation {quantity} {bar.heldout:.4g} vs "
                     f"{bar.baseline_name}'s {bar.baseline:.4g}) but the network did (best validation {quantity} "
                     f"{c.v_best:.4g}): what it learned is not linear in these features, so the reference sets no "
                     f"bar and model bias was not checked against it")
        return None, None, []
    evidence.append(f"the simple reference ({bar.model}) reaches validation {quantity} {bar.heldout:.4g}, no "
                    f"better than {bar.baseline_name} ({quantity} {bar.baseline:.4g}): the labels look "
                    f"unpredictable from these features")
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
                    f"model reaches on held-out rows, {c.quantity} {bar.heldout:.4g} ({bar.model})")
    if above:
        evidence.append("the network can represent that simple model, so a training value above it points to "
                        "optimization, not model bias")
        return "optimization trouble", advice("optimization", remedies, settings)
    return ("model bias or optimization trouble",
            advice("optimization", remedies, settings) + advice("bias", remedies, settings))


def _check_overfitting(c: _Curves, w: _Watched, bar: Reference | None, remedies, settings: dict, evidence: list):
    """("overfitting", its remedies, whether the curve turned) where validation ends GAP_RATIO above training,
    or rose RISE from its best (beyond noise) while training fell, or the checkpoint's own metric (BLEU, ROC
    AUC) ended RISE worse than its best while training fell; else ("healthy", [], False). Earlier stopping is
    advised only where a curve turned: on a gap alone the validation value may still be improving."""
    quantity, t_end, v_end, v_best, best_epoch = c.quantity, c.t_end, c.v_end, c.v_best, c.best_epoch
    train_fell = t_end < c.train_at.get(best_epoch, -math.inf)
    rose = best_epoch < c.val[-1][0] and v_end >= (1 + RISE) * v_best and v_end - v_best > c.noise(v_best) \
        and train_fell
    gap = v_end >= GAP_RATIO * t_end and v_end > 0 and v_end - t_end > c.noise(v_end)
    metric_turned = False
    if w.own:
        end, train_then = w.series[-1][1], c.train_at.get(w.best_epoch, -math.inf)
        metric_turned = w.best_epoch < w.series[-1][0] and -w.gain(w.best, end) >= RISE * abs(w.best) and \
            t_end < train_then
    if bar is not None:
        evidence.append(f"training {quantity} {t_end:.4g} is clearly below what a simple model reaches on held-out "
                        f"rows, {quantity} {bar.heldout:.4g} ({bar.model}), so neither model bias nor optimization "
                        f"holds it back")
    if not (gap or rose or metric_turned):
        evidence.append(f"{c.ends}: gap {v_end / max(t_end, 1e-12):.2f}x (overfitting from {GAP_RATIO:g}x), "
                        f"validation {quantity} not clearly above its best, {v_best:.4g} (epoch {best_epoch})")
        return "healthy", [], False
    if gap:
        ratio = v_end / max(t_end, 1e-12)
        times = f"{ratio:.1f}x" if ratio < 1000 else "over 1000x"  # (a memorised training set: ~1e-9)
        evidence.append(f"{c.ends}: validation is {times} training (threshold {GAP_RATIO:g}x)")
    if rose:
        evidence.append(f"validation {quantity} was best at epoch {best_epoch} ({v_best:.4g}) and rose "
                        f"{f'{v_end / v_best - 1:.0%}' if v_best > 0 else f'to {v_end:.4g}'} by the end while "
                        f"training {quantity} fell "
                        f"({c.train_at[best_epoch]:.4g} -> {t_end:.4g}); early stopping keeps epoch "
                        f"{best_epoch}'s weights")
    if metric_turned:
        end = w.series[-1][1]
        evidence.append(f"{w.name} was best at epoch {w.best_epoch} ({w.best:.4g}) and ended "
                        f"{abs(end / w.best - 1):.0%} worse ({end:.4g}) while training {quantity} fell "
                        f"({c.train_at[w.best_epoch]:.4g} -> "
                        f"{t_end:.4g}); the best checkpoint keeps epoch {w.best_epoch}'s weights")
    turned = rose or metric_turned
    kept = [r for r in remedies if turned or r != EARLIER_STOPPING]
    return "overfitting", advice("overfitting", kept, settings), turned


def _check_score(w: _Watched, score: ReferenceScore, monitor: str | None, remedies, settings: dict,
                 evidence: list):
    """A healthy-looking run whose best value of the checkpoint's metric does not beat the baseline the
    homework scored itself (not a ceiling) has model bias or optimization trouble: ("model bias or
    optimization trouble", its remedies); else ("healthy", [])."""
    best = _score_best(w, score, monitor)
    if best is None or score.ceiling:
        return "healthy", []
    epoch, value, higher = best
    if (value > score.score) if higher else (value < score.score):
        return "healthy", []
    evidence.append(f"its best {score.monitor} {value:.4g} (epoch {epoch}) does not beat the reference "
                    f"{score.model}, {score.monitor} {score.score:.4g}: the network is no better than a simple "
                    f"model yet")
    return ("model bias or optimization trouble",
            advice("optimization", remedies, settings) + advice("bias", remedies, settings))


def _score_best(w: _Watched, score: ReferenceScore, monitor: str | None) -> tuple[int, float, bool] | None:
    """(epoch, value, higher is better): the network's best in the reference's metric, where that is the
    checkpoint's; None where the homework scored its reference in another metric."""
    if score.monitor != monitor:
        return None
    if w.own:
        return w.best_epoch, w.best, w.mode == "max"
    if monitor == "val_acc" and w.name == "validation error rate":  # (the curve is 1 - val_acc)
        return w.best_epoch, 1 - w.best, True
    return w.best_epoch, w.best, False


def _score_notes(w: _Watched, score: ReferenceScore | None, monitor: str | None) -> list[str]:
    """The homework's own reference beside the network's best, in the checkpoint's metric."""
    if score is None:
        return []
    best = _score_best(w, score, monitor)
    if best is None:
        return [f"the homework's reference ({score.model}) is scored in {score.monitor}, not in the checkpoint's "
                f"metric {monitor}, so it was not compared"]
    epoch, value, higher = best
    if score.ceiling:
        gap = (score.score - value) if higher else (value - score.score)
        where = (f"{abs(gap):.4g} short of it" if gap > 0 else "at it" if gap == 0 else
                 f"{abs(gap):.4g} past it (a ceiling is not a bound: check how it was scored)")
        return [f"the ceiling: {score.model} reaches {score.monitor} {score.score:.4g}; the network's best is "
                f"{value:.4g} (epoch {epoch}), {where}"]
    beats = (value > score.score) if higher else (value < score.score)
    return [f"the homework's reference, {score.model}, reaches {score.monitor} {score.score:.4g}; the network's "
            f"best {value:.4g} (epoch {epoch}) {'beats' if beats else 'does not beat'} it"]


def _notes(c: _Curves, w: _Watched, verdict: str, fix: list, bar: Reference | None, settings: dict,
           run_dir: Path | None, stopped_early: bool, turned: bool) -> list[str]:
    """What holds whatever the verdict: still improving at the end (not after a turn), a mismatch of the
    splits, a simple reference that validates better than the network."""
    notes, quantity, val, train_at = [], c.quantity, c.val, c.train_at
    improving = _improving(w) if verdict != "nothing to learn" and not turned else None
    if improving is not None and not any(line.startswith(LONGER) for line in fix):
        window, then, now, firm = improving
        ran = w.series[-1][0] + 1
        if firm:
            still = train_longer(w.series, w.name, settings, run_dir, stopped_early, (window, then, now))
            notes.append(f"still improving at the end (best epoch {w.best_epoch} of {ran}): {still}")
        else:
            notes.append(f"the best epoch ({w.best_epoch} of {ran}) is near the end, but the last {window} epoch(s) "
                         f"moved {w.name} only {then:.4g} -> {now:.4g}, within the noise of {c.val_samples:,} "
                         f"validation samples: no firm sign that more epochs would help")
    ran, planned = val[-1][0] + 1, settings.get("trainer.max_epochs")
    if isinstance(planned, int) and ran < planned and not stopped_early and verdict != "overfitting" and \
            not any(word in line for line in [*fix, *notes] for word in LONGER):
        notes.append(f"train to the planned {planned} epochs (the run stopped after {ran}, before its planned end): "
                     f"{_resume(settings, run_dir)}")
    first_train, first_val = train_at.get(val[0][0]), val[0][1]
    if first_train is not None and first_train > 0 and first_val >= MISMATCH * first_train and \
            first_val - first_train > c.noise(first_val):
        notes.append(f"mismatch? validation {quantity} {first_val:.4g} was already {first_val / first_train:.1f}x "
                     f"training {quantity} ({first_train:.4g}) after the first epoch, before any overfitting: check "
                     f"that the validation split comes from the same distribution as the training split")
    pairs = [(train_at[e], v) for e, v in val if e in train_at]
    if pairs and all(v * MISMATCH <= t for t, v in pairs) and c.t_end - c.v_end > c.noise(c.v_end):
        notes.append(f"validation {quantity} stayed below half the training {quantity} at every epoch (last "
                     f"{c.v_end:.4g} vs {c.t_end:.4g}): dropout/augmentation in training only, or a validation split "
                     f"easier than the training split (mismatch)")
    if bar is not None and bar.heldout < c.v_best - c.noise(c.v_best):
        accuracy = (f"; val_acc {1 - bar.heldout:.4g} vs {1 - c.v_best:.4g}" if quantity == "error rate" else "")
        notes.append(f"the simple reference validates better than the network's best: validation {quantity} "
                     f"{bar.heldout:.4g} ({bar.model}) vs {c.v_best:.4g} (epoch {c.best_epoch}){accuracy}; the "
                     f"linear model generalizes better than the network so far")
    return notes


# --- one diagnosis, one direction per knob ------------------------------------------------------------
def pulls(line: str, settings: dict) -> set[tuple[str, int]]:
    """Which way a line of advice turns each knob: ("epochs", +1) for training longer, -1 for stopping earlier;
    (flag, +1/-1) for a number raised or lowered from the run's value (alternatives joined by "or" are one
    remedy's choices, not two pulls)."""
    found = set()
    if any(word in line for word in LONGER):
        found.add(("epochs", 1))
    if any(word in line for word in SHORTER):
        found.add(("epochs", -1))
    for flag, value in re.findall(r"(--[\w.]+) ([^\s()]+)(?=[\s)]|$)(?! or )", line):
        current = settings.get(flag[2:])
        number = _number(value)
        if number is None or isinstance(current, bool) or not isinstance(current, (int, float, list)):
            continue
        now = sum(current) if isinstance(current, list) else current
        if isinstance(now, (int, float)) and number != now:
            found.add((flag, 1 if number > now else -1))
    return found


def _number(text: str) -> float | None:
    try:
        value = float(text) if not text.startswith("[") else sum(float(v) for v in text.strip("[]").split(","))
    except ValueError:
        return None
    return value


def conflicts(lines: list[str], settings: dict) -> list[tuple[str, str]]:
    """Pairs of lines that pull one knob two ways (the test of "no advice that contradicts itself")."""
    found = []
    for i, a in enumerate(lines):
        for b in lines[i + 1:]:
            pa, pb = pulls(a, settings), pulls(b, settings)
            if any((knob, -sign) in pb for knob, sign in pa):
                found.append((a, b))
    return found


def _without_conflicts(fix: list[str], notes: list[str], settings: dict) -> tuple[list[str], list[str]]:
    """The remedies, and the notes that do not pull against them (the verdict's remedies win; the checks are
    built not to disagree, this keeps it so)."""
    return fix, [note for note in notes if not any(conflicts([line, note], settings) for line in fix)]


def format_diagnosis(d: Diagnosis, reference: Reference | None = None, score: ReferenceScore | None = None) -> str:
    """A few lines for the terminal and W&B: the verdict, what it rests on, its numbers, the remedies as flags,
    the notes, and how the references were found."""
    lines = [f"Diagnosis (practical methodology): {d.verdict}"]
    lines += [f"  {b}" for b in d.basis]
    lines += [f"  - {e}" for e in d.evidence]
    if d.remedies:
        lines.append("  try:")
        lines += [f"    {r}" for r in d.remedies]
    lines += [f"  note: {n}" for n in d.notes]
    if reference is not None:
        lines.append(f"  (simple reference: {reference.how()})")
    if score is not None:
        lines.append(f"  (the homework's reference: {score.model}, {score.monitor} {score.score:.4g} on the "
                     f"validation split, {'a ceiling' if score.ceiling else 'a baseline'})")
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
    say (no learning-curve history, no validation). `record`: the run's RunRecord, which keeps the references
    and the validation size (for `diagnose` later). The simple reference takes seconds on the training split."""
    curve = _curve(trainer)
    history = dict(curve.history) if curve is not None else None
    if not history:
        return None
    run_dir = Path(trainer.default_root_dir)
    monitor, mode = getattr(model, "monitor", None), getattr(model, "mode", None)
    reference, score, why, failed = None, None, "", []
    if "val_loss" in history or "val_acc" in history or monitor in history:
        try:
            reference, why = reference_score(datamodule)
        except Exception as err:  # the diagnosis goes on without it, and says so
            why = f"the simple reference could not be fitted ({err}), so model bias was not checked"
        try:
            score = own_reference(datamodule)
        except Exception as err:
            failed.append(f"the homework's own reference could not be scored ({err})")
    val_samples = validation_samples(trainer)
    values = record.record if record is not None else {}
    if record is not None:
        record.add(trainer, reference=reference.as_dict() if reference is not None else None,
                   reference_score=asdict(score) if score is not None else None, val_samples=val_samples)
    settings = run_settings(run_dir, dict(getattr(model, "hparams", {}) or {}),
                            dict(getattr(datamodule, "hparams", {}) or {}))
    this = RunSize.of("this run", values)
    sizes = comparable_sizes(run_dir, values) if this is not None else []
    diagnosis = diagnose(history, reference, remedies_of(model, datamodule), settings, this, sizes, why, run_dir,
                         curve.stopped_epoch is not None, monitor, mode, val_samples, score)
    if diagnosis is None:
        return None
    diagnosis.notes += failed
    return format_diagnosis(diagnosis, reference, score)


def validation_samples(trainer) -> int | None:
    """How many samples the validation metrics average over (the validation split, or the part of it that
    `--trainer.limit_val_batches` leaves); None where a loader does not say. A dataset whose items are whole
    batches (HW8's validation blocks) says how many samples it holds as `num_samples`; a sampler that makes the
    batches (`batch_size=None` on the loader) says its `batch_size`, else the batches used are taken pro rata."""
    loaders = getattr(trainer, "val_dataloaders", None)
    if loaders is None:
        return None
    loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    batches = list(getattr(trainer, "num_val_batches", None) or [])
    total = 0
    for i, loader in enumerate(loaders):
        try:
            size, full = getattr(loader.dataset, "num_samples", None) or len(loader.dataset), len(loader)
        except (AttributeError, TypeError):
            return None
        used = batches[i] if i < len(batches) and isinstance(batches[i], int) else full
        batch_size = getattr(loader, "batch_size", None) or getattr(getattr(loader, "sampler", None), "batch_size",
                                                                    None)
        if used < full:
            size = min(size, used * batch_size) if isinstance(batch_size, int) else -(-size * used // full)
        total += size
    return total or None


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

    record = runs.own_record(run_dir, getattr(datamodule_class, "homework", None), "diagnose")
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
    score = _score_from(record.get("reference_score"))
    data = None
    if datamodule_class is not None and (reference is None or "reference_score" not in record):
        config = run_dir / "config.yaml"
        data = ((yaml.safe_load(config.read_text()) or {}).get("data") or {}) if config.is_file() else {}
    if reference is None and data is not None:
        try:
            reference, why = reference_score(datamodule_class(**data))
        except (DataError, TypeError, ValueError) as err:
            why = f"the simple reference could not be fitted on the run's data ({err}), so model bias was not checked"
    elif reference is None and "reference" not in record:
        why = "run.json holds no reference (fit with --diagnose false, or an older run), so model bias was not checked"
    if "reference_score" not in record and data is not None and _scores_itself(datamodule_class):
        try:
            datamodule = datamodule_class(**data)
            datamodule.setup("fit")
            score = own_reference(datamodule)
        except (DataError, TypeError, ValueError):
            score = None
    monitor = record.get("monitor") or getattr(model_class, "monitor", None)
    mode = record.get("mode") or getattr(model_class, "mode", None)
    this = RunSize.of("this run", record)
    sizes = comparable_sizes(run_dir, record) if this is not None else []
    diagnosis = diagnose(history, reference, remedies_of(model_class, datamodule_class), settings, this, sizes, why,
                         run_dir, stopped_early, monitor, mode,
                         record.get("val_samples") or (reference.val_total if reference is not None else None), score)
    head = f"Run {run_dir} ({runs.describe_status(record)}, {record.get('epochs')} epochs)"
    text = format_diagnosis(diagnosis, reference, score) if diagnosis else "no validation curve to diagnose"
    return head + "\n" + text


def _score_from(data: dict | None) -> ReferenceScore | None:
    try:
        return ReferenceScore(**data) if data else None
    except TypeError:  # (a run.json written by another version: scored again where possible)
        return None


def _scores_itself(datamodule_class) -> bool:
    """Whether the homework overrides the `reference_score` hook (setting its data up costs time otherwise)."""
    from datamodules.base import HomeworkDataModule

    return getattr(datamodule_class, "reference_score", None) is not HomeworkDataModule.reference_score


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
