"""The "practical methodology" lecture applied to a finished fit: a short diagnosis from the run's own numbers.

The lecture's recipe: is the *training* loss low? Low means lower than what a simple model reaches, so the
advisor fits one on the same training split (`fit_reference`). A network whose training value is not clearly
below it has model bias or optimization trouble; one whose training value is low but validation value high
is overfitting. And a bigger model with a higher training loss than a smaller one points to optimization:
the advisor compares with the student's earlier runs of the same homework, data and split (run.json).

The simple reference is what the lecture would accept as "a simple model": a linear model (logistic
regression for classes, ridge regression for a number) that cannot memorize the training split:
  - its L2 penalty is chosen on a held-out quarter of (a sample of) its training rows, kept apart by group
    where rows overlap (HW2's frames of one utterance): the strongest penalty not clearly worse there than the
    best one (so on labels it cannot predict, the strongest, which cannot memorize them);
  - its features are capped at one per ROWS_PER_FEATURE training rows of a class (principal components
    beyond that), so it has too few weights to learn each row by heart;
  - it is compared by its *held-out* value (on the validation split), the number "what a simple model really
    reaches", not by its training value (which a memorizing model would push towards 0).
Each homework's DataModule says what the reference sees (`reference_data`, datamodules/lab_hooks.py): HW1 the same
features as the network, HW2 the frame windows, HW3 colour thumbnails, HW4 each utterance's mean and spread
of its mel bins; HW5 declares none, and the diagnosis says the bias check was skipped.
Where the reference does no better than always the majority class (or the training mean) on held-out rows,
and the network neither, the data gives nothing to learn: the labels look unpredictable from these features.
That is said instead of any bias/optimization verdict.

Thresholds (module constants, tested on constructed runs in tests/test_advisor.py):
  LEARNABLE    0.05  the reference beats the baseline on held-out rows by 5% of it (and by two standard errors
                     of an error rate): something to learn;
  BIAS_MARGIN  0.10  the training value not 10% below the reference's held-out value: model bias or optimization
                     trouble; above it outright: optimization (the network can represent the linear model);
  SIZE_MARGIN  0.10  a bigger model's final training loss 10% above a smaller earlier run's, after at least as
                     many epochs: optimization;
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

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from callbacks import LearningCurvePlot
from datamodules.errors import DataError
from datamodules.lab_hooks import ReferenceData, Remedy, advice, flatten_settings, sample_rows
from homework import runs
from homework.cli.arguments import option

LEARNABLE = 0.05
BIAS_MARGIN = 0.10
SIZE_MARGIN = 0.10
GAP_RATIO = 2.0
RISE = 0.10
LATE = 0.10
STILL_FALLING = 0.01
MISMATCH = 2.0
MAX_SAMPLES = 20_000  # training (and validation) rows the reference sees: seconds, not minutes
ROWS_PER_FEATURE = 2  # features capped at (training rows per class) / this: too few weights to memorize
SELECTION_ROWS = 5_000  # rows its L2 penalty is chosen on (a quarter of them held out)
PCA_ROWS = 2_000  # rows the features' scale (and principal components, when capped) are found on
#: L2 penalties tried, per training row, strongest first (the strongest not clearly worse than the best wins)
PENALTIES = (100.0, 10.0, 1.0, 0.1, 0.01, 1e-3, 1e-4)

#: Remedies every homework shares: they are the command line's, not a homework's.
COMMON_REMEDIES = (
    Remedy("overfitting", "earlier stopping", "--early_stopping.patience", times=0.5),
    Remedy("overfitting", "more data (or augmentation)"),
)
NOTHING_TO_LEARN = ["check that each label belongs to its input (same order and ids in the training files)",
                    "features that carry the information (the reference saw: {features})"]


# --- the reference model ----------------------------------------------------------------------
@dataclass
class Reference:
    """A simple model's values on its training rows and on held-out (validation) rows, and the baseline's
    (always the majority class, or the training mean) on the same held-out rows."""

    model: str  # "logistic regression" | "ridge regression"
    features: str  # what a row holds (the DataModule's words)
    quantity: str  # "error rate" | "MSE" (lower is better)
    train: float
    heldout: float
    baseline: float
    baseline_name: str
    penalty: float  # the chosen L2 penalty per training row
    train_rows: int
    train_total: int
    val_rows: int
    val_total: int
    num_features: int
    components: int  # features the model used (principal components when capped)
    grouped: bool  # the penalty was chosen with groups kept apart
    seconds: float

    @property
    def learnable(self) -> bool:
        """The reference does clearly better than the baseline on held-out rows: the data has something to learn."""
        return clearly_better(self.heldout, self.baseline, self.val_rows, self.quantity)

    def how(self) -> str:
        """How it was fitted, on what: the line under the diagnosis."""
        capped = (f", cut to their first {self.components} principal components (one per {ROWS_PER_FEATURE} training "
                  f"rows of a class)" if self.components < self.num_features else "")
        return (f"{self.model} on {self.features} ({self.num_features} features){capped}; L2 penalty "
                f"{self.penalty:g} per row, chosen on a held-out quarter of its training rows"
                f"{' (whole groups held out)' if self.grouped else ''}; trained on "
                f"{self.train_rows:,} of {self.train_total:,} training rows, scored on {self.val_rows:,} of "
                f"{self.val_total:,} validation rows; fitted in {self.seconds:.1f} s")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Reference | None":
        names = {f.name for f in fields(cls)}
        if not data or not names <= set(data):  # (an older run.json's reference: fitted again)
            return None
        return cls(**{k: v for k, v in data.items() if k in names})


def clearly_better(value: float, baseline: float, rows: int, quantity: str) -> bool:
    """`value` beats `baseline` by LEARNABLE of it, and (an error rate) by two standard errors on `rows` rows."""
    margin = LEARNABLE * baseline
    if quantity == "error rate" and rows > 0:
        margin = max(margin, 2 * math.sqrt(max(baseline * (1 - baseline), 0.0) / rows))
    return value < baseline - margin


def fit_reference(data: ReferenceData) -> Reference:
    """Fit the simple model on `data`'s training rows and score it on its validation rows (see the module
    docstring). scikit-learn: StandardScaler, PCA where features are capped, then LogisticRegression or
    Ridge with the L2 penalty chosen on held-out rows (ShuffleSplit / GroupShuffleSplit)."""
    import torch
    from threadpoolctl import threadpool_limits

    with threadpool_limits(torch.get_num_threads()):  # the CLI's --torch_num_threads: on a busy CPU more threads
        return _fit_reference(data)                  # spin-wait on each other (several times slower)


def _fit_reference(data: ReferenceData) -> Reference:
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    classify = data.task == "classification"
    x, xv = _array(data.train_x, np.float32), _array(data.val_x, np.float32)
    target = np.int64 if classify else np.float64
    y, yv = _array(data.train_y, target), _array(data.val_y, target)
    groups = None if data.groups is None else _array(data.groups, np.int64)
    if len(x) < 8 or len(xv) == 0:
        raise ValueError(f"{len(x)} training and {len(xv)} validation rows are too few for a reference model")
    n, d = x.shape
    classes = len(np.unique(y)) if classify else 1
    k = min(d, max(1, n // (ROWS_PER_FEATURE * classes)))
    rows = sample_rows(n, PCA_ROWS, 3).numpy()  # (the scale and the components need no more rows than these)
    scaler = StandardScaler().fit(x[rows])
    x, xv = scaler.transform(x), scaler.transform(xv)
    if k < d:
        pca = PCA(k, svd_solver="randomized", random_state=0).fit(x[rows])
        x, xv = pca.transform(x), pca.transform(xv)
    if classify:
        majority = int(np.bincount(y).argmax())
        baseline, baseline_name = float(np.mean(yv != majority)), f"always the majority class ({majority})"
    else:
        mean = float(y.mean())
        baseline, baseline_name = float(np.mean((yv - mean) ** 2)), f"always the training mean ({mean:.4g})"
    if classify and classes < 2:  # one class only: nothing a model could add to always predicting it
        train, heldout, penalty = float(np.mean(y != majority)), baseline, math.inf
    else:
        penalty, model = _choose_penalty(x, y, groups, classify)
        if not classify or not np.array_equal(model.classes_, np.unique(y)):
            model = _model(classify, penalty, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.set_params(**_strength(classify, penalty, n)).fit(x, y)  # (classes: warm-started from the choice)
        train, heldout = _score(model, x, y, classify), _score(model, xv, yv, classify)
    return Reference("logistic regression" if classify else "ridge regression", data.features,
                     "error rate" if classify else "MSE", train, heldout, baseline, baseline_name, penalty,
                     n, int(data.train_total), len(xv), int(data.val_total), d, min(k, d), groups is not None,
                     time.perf_counter() - start)


def _array(values, dtype) -> np.ndarray:
    values = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    return values.astype(dtype, copy=False)


def _strength(classify: bool, penalty: float, rows: int) -> dict:
    """scikit-learn's C or alpha for an L2 penalty of `penalty` per training row on `rows` rows (they weigh the
    penalty against the *summed* loss, so a penalty per row keeps its meaning at any size)."""
    return {"C": 1 / (2 * penalty * rows)} if classify else {"alpha": penalty * rows}


def _model(classify: bool, penalty: float, rows: int):
    """The linear model, warm-started from its last fit (logistic regression: each fit starts where the last
    ended, so a path of penalties costs little more than one fit)."""
    if classify:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=200, tol=1e-3, warm_start=True, **_strength(True, penalty, rows))
    from sklearn.linear_model import Ridge

    return Ridge(**_strength(False, penalty, rows))


def _score(model, x: np.ndarray, y: np.ndarray, classify: bool) -> float:
    predicted = model.predict(x)
    return float(np.mean(predicted != y)) if classify else float(np.mean((predicted - y) ** 2))


def _choose_penalty(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, classify: bool):
    """The L2 penalty chosen on a held-out quarter of (at most SELECTION_ROWS of) the training rows, and the
    model fitted with it there: the strongest penalty that is not clearly worse on the held-out rows than the
    best one, i.e. by less than two standard errors of their row-by-row difference (in the spirit of the
    "one-standard-error rule": the simpler model unless the data says otherwise; on labels it cannot predict,
    the penalties differ only by noise and the strongest, which cannot memorize them, wins). Rows of one group
    stay on one side (overlapping windows of one utterance would otherwise be held out next to their
    near-copies)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    rows = sample_rows(len(x), SELECTION_ROWS, 2).numpy()
    x, y = x[rows], y[rows]
    if groups is not None and len(np.unique(groups[rows])) >= 4:
        fit, held = next(GroupShuffleSplit(1, test_size=0.25, random_state=0).split(x, y, groups[rows]))
    else:
        fit, held = next(ShuffleSplit(1, test_size=0.25, random_state=0).split(x))
    if classify and len(np.unique(y[fit])) < 2:
        return PENALTIES[0], _model(classify, PENALTIES[0], len(fit))
    losses, models, model = [], [], _model(classify, PENALTIES[0], len(fit))
    with warnings.catch_warnings():  # 200 iterations are plenty for a reference; not converging is fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        for penalty in PENALTIES:  # strongest first, each warm-started from the last (classes)
            model.set_params(**_strength(classify, penalty, len(fit))).fit(x[fit], y[fit])
            predicted = model.predict(x[held])
            losses.append((predicted != y[held]).astype(float) if classify else (predicted - y[held]) ** 2)
            models.append(copy.deepcopy(model))
    best = losses[int(np.argmin([loss.mean() for loss in losses]))]
    chosen = next(i for i, loss in enumerate(losses)
                  if (loss - best).mean() <= 2 * (loss - best).std() / np.sqrt(len(best)))
    return PENALTIES[chosen], models[chosen]


def reference_score(datamodule) -> tuple[Reference | None, str]:
    """The datamodule's reference (its `reference_data` hook), and a line saying why there is none."""
    start = time.perf_counter()
    hook = getattr(datamodule, "reference_data", None)
    if not callable(hook):
        return None, (f"the simple reference is not available for this homework ({type(datamodule).__name__} has no "
                      f"reference_data()), so model bias was not checked")
    data = hook(MAX_SAMPLES)
    if data is None:
        return None, (f"the simple reference is not available for this homework ({type(datamodule).__name__}."
                      f"reference_data() gives none: no simple model compares), so model bias was not checked")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices of changing defaults
        reference = fit_reference(data)
    reference.seconds = time.perf_counter() - start  # gathering its rows included: what the advice costs
    return reference, ""


# --- earlier runs of other model sizes -----------------------------------------------------------
@dataclass
class RunSize:
    """A run's model size and how far it got on the training data (from its run.json)."""

    name: str
    parameters: int
    train_loss: float
    epochs: int

    @classmethod
    def of(cls, name: str, record: dict) -> "RunSize | None":
        parameters, loss = record.get("parameters"), record.get("train_loss")
        if not parameters or loss is None or not math.isfinite(loss):  # (older run.json files: not compared)
            return None
        return cls(name, int(parameters), float(loss), int(record.get("epochs") or 0))


def comparable_sizes(run_dir: Path, record: dict, root: Path | None = None) -> list[RunSize]:
    """Earlier runs of the same homework on the same data directory and split, with a parameter count and a
    final training loss in their run.json (not this run)."""
    found = []
    for other in runs.run_dirs(root or run_dir.parent):
        if other.resolve() == run_dir.resolve():
            continue
        theirs = runs.read_record(other) or {}
        if (theirs.get("homework"), theirs.get("data_dir"), theirs.get("split")) == \
                (record.get("homework"), record.get("data_dir"), record.get("split")):
            size = RunSize.of(other.name, theirs)
            if size is not None:
                found.append(size)
    return found


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
        return f"train to the planned {planned} epochs (it stopped after {ran}; {why}): fit --resume{where}"
    return f"train longer: --trainer.max_epochs {2 * ran} (twice the {ran} epochs run; {why})"


def diagnose(history: dict, reference: Reference | None, remedies=(), settings: dict | None = None,
             this: RunSize | None = None, sizes: list[RunSize] = (), why_no_reference: str = "",
             run_dir: Path | None = None, stopped_early: bool = False) -> Diagnosis | None:
    """The verdict from the per-epoch history (`LearningCurvePlot.history`: name -> [(epoch, value)]), the
    reference, and earlier runs' sizes (see the module docstring for the rules). `remedies`: the homework's
    `Remedy` entries; `settings`: the run's flattened config. None: no training and validation curves."""
    found = curves(history, reference)
    if found is None:
        return None
    quantity, train, val = found
    own = tuple(remedies)
    settings, remedies = settings or {}, own + COMMON_REMEDIES
    t_end, v_end = train[-1][1], val[-1][1]
    best_epoch, v_best = min(val, key=lambda p: p[1])
    train_at = dict(train)
    notes, evidence, fix = [], [], []
    ends = f"final training {quantity} {t_end:.4g} (epoch {train[-1][0]}), validation {v_end:.4g}"
    verdict = None
    bar = reference if reference is not None and reference.quantity == quantity else None
    if reference is not None and bar is None:
        notes.append(f"the network logs no {reference.quantity}, so it was not compared with the reference")
    if bar is not None and not bar.learnable:
        if not clearly_better(v_best, bar.baseline, bar.val_rows, quantity):
            verdict = "nothing to learn"
            evidence.append(f"the reference ({bar.model}) reaches {quantity} {bar.heldout:.4g} on held-out rows, no "
                            f"better than {bar.baseline_name} ({bar.baseline:.4g}): the labels look unpredictable from "
                            f"these features")
            evidence.append(f"the network's best validation {quantity} {v_best:.4g} (epoch {best_epoch}) is no better "
                            f"either")
            if clearly_better(t_end, bar.baseline, bar.train_rows, quantity):
                evidence.append(f"its training {quantity} {t_end:.4g} comes from memorizing the training rows: it does "
                                f"not carry over to the validation split")
            fix = [line.format(features=bar.features) for line in NOTHING_TO_LEARN]
        else:
            notes.append(f"the reference found nothing to learn ({quantity} {bar.heldout:.4g} held out vs "
                         f"{bar.baseline_name}'s {bar.baseline:.4g}) but the network did (best validation "
                         f"{v_best:.4g}): what it learned is not linear in these features, so the reference sets no "
                         f"bar and model bias was not checked against it")
        bar = None
    longer = train_longer(train, f"training {quantity}", settings, run_dir, stopped_early)
    if verdict is None and this is not None:
        smaller = [s for s in sizes
                   if s.parameters < this.parameters and s.train_loss < (1 - SIZE_MARGIN) * this.train_loss]
        fair = [s for s in smaller if this.epochs >= s.epochs]
        if fair:
            s = min(fair, key=lambda s: s.train_loss)
            verdict = "optimization trouble"
            evidence.append(f"this run's model ({this.parameters:,} parameters) ends with training loss "
                            f"{this.train_loss:.4g} after {this.epochs} epochs, higher than the smaller model of run "
                            f"{s.name} ({s.parameters:,} parameters: {s.train_loss:.4g} after {s.epochs} epochs): a "
                            f"bigger model with a higher training loss points to optimization, not model bias")
            fix = advice("optimization", remedies, settings)
        for s in [s for s in smaller if s not in fair]:
            notes.append(f"run {s.name}'s smaller model ({s.parameters:,} parameters) reached a lower training loss "
                         f"({s.train_loss:.4g}), but after more epochs ({s.epochs} vs {this.epochs}): not a fair "
                         f"size comparison")
        for s in sizes:
            if s.parameters > this.parameters and s.train_loss > (1 + SIZE_MARGIN) * this.train_loss:
                notes.append(f"earlier run {s.name}'s bigger model ({s.parameters:,} parameters) ended with a higher "
                             f"training loss ({s.train_loss:.4g}) than this one ({this.train_loss:.4g}): that run had "
                             f"optimization trouble")
        if sizes and not fair:
            shown = sorted([*sizes, this], key=lambda s: s.parameters)[:6]
            notes.append("sizes compared (same data and split; final training loss): " + ", ".join(
                f"{'this run' if s is this else s.name} {s.parameters:,} parameters {s.train_loss:.4g}" for s in shown))
    if verdict is None and bar is not None and t_end > (1 - BIAS_MARGIN) * bar.heldout:
        above = t_end > bar.heldout
        verdict = "optimization trouble" if above else "model bias or optimization trouble"
        evidence.append(f"training {quantity} {t_end:.4g} is {'above' if above else 'not 10% below'} what a simple "
                        f"model reaches on held-out rows, {bar.heldout:.4g} ({bar.model})")
        if above:
            evidence.append("the network can represent that simple model, so a training value above it points to "
                            "optimization, not model bias")
        fix = advice("optimization", remedies, settings) + ([] if above else advice("bias", remedies, settings))
    if verdict == "optimization trouble" and longer:
        fix.insert(0, longer)
    if verdict is None:
        rose = best_epoch < val[-1][0] and v_end >= (1 + RISE) * v_best and t_end < train_at.get(best_epoch, math.inf)
        gap = v_end >= GAP_RATIO * t_end and v_end > 0
        if bar is not None:
            evidence.append(f"training {quantity} {t_end:.4g} is clearly below what a simple model reaches on held-out "
                            f"rows, {bar.heldout:.4g} ({bar.model}), so neither model bias nor optimization holds it "
                            f"back")
        if gap or rose:
            verdict = "overfitting"
            if gap:
                ratio = v_end / max(t_end, 1e-12)
                times = f"{ratio:.1f}x" if ratio < 1000 else "over 1000x"  # (a memorised training set: ~1e-9)
                evidence.append(f"{ends}: validation is {times} training (threshold {GAP_RATIO:g}x)")
            if rose:
                evidence.append(f"validation {quantity} was best at epoch {best_epoch} ({v_best:.4g}) and rose "
                                f"{v_end / v_best - 1:.0%} by the end while training {quantity} fell "
                                f"({train_at[best_epoch]:.4g} -> {t_end:.4g}); early stopping keeps epoch "
                                f"{best_epoch}'s weights")
            fix = advice("overfitting", remedies, settings)
        else:
            verdict = "healthy"
            evidence.append(f"{ends}: gap {v_end / max(t_end, 1e-12):.2f}x (overfitting from {GAP_RATIO:g}x), "
                            f"validation within {RISE:.0%} of its best {v_best:.4g} (epoch {best_epoch})")
    # still improving at the end: the best validation epoch is among the last ones and validation still falls
    window = max(1, math.ceil(LATE * len(val)))
    if verdict != "nothing to learn" and len(val) > window and best_epoch >= val[-window][0]:
        still = train_longer(val, f"validation {quantity}", settings, run_dir)
        if still is not None and not any(line.startswith(("train", "more patience")) for line in fix):
            notes.append(f"still improving at the end (best epoch {best_epoch} of {val[-1][0] + 1}): {still}")
    first_train, first_val = train_at.get(val[0][0]), val[0][1]
    if first_train is not None and first_train > 0 and first_val >= MISMATCH * first_train:
        notes.append(f"mismatch? validation {quantity} {first_val:.4g} was already {first_val / first_train:.1f}x "
                     f"training ({first_train:.4g}) after the first epoch, before any overfitting: check that the "
                     f"validation split comes from the same distribution as the training split")
    pairs = [(train_at[e], v) for e, v in val if e in train_at]
    if pairs and all(v * MISMATCH <= t for t, v in pairs):
        notes.append(f"validation {quantity} stayed below half the training {quantity} at every epoch (last "
                     f"{v_end:.4g} vs {t_end:.4g}): dropout/augmentation in training only, or a validation split "
                     f"easier than the training split (mismatch)")
    if bar is not None and bar.heldout < v_best:
        notes.append(f"the reference validates better than the network's best ({bar.heldout:.4g} vs {v_best:.4g} "
                     f"at epoch {best_epoch}): a simpler model or fewer features may be the better submission")
    if not own and verdict not in ("healthy", "nothing to learn"):
        notes.append("this homework declares no remedies of its own (`remedies` on its task or DataModule, "
                     "datamodules/lab_hooks.py), so only the command line's are suggested")
    if reference is None:
        notes.append(why_no_reference or "no simple reference model for this homework, so model bias was not checked")
    return Diagnosis(verdict, evidence, fix, notes)


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
