"""The advisor's simple reference model: what "low" means for a training loss (the "practical methodology"
lecture). Apart from advisor.py because it is a model fitted on data (scikit-learn), not a reading of a run's
curves: advisor.py asks it for one number and a line saying how it was found.

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
of its mel bins; HW5 declares none, and the diagnosis says the bias check was skipped. A homework whose
data no generic classifier or regressor fits scores a reference itself in its own metric instead
(`reference_score`, `own_reference` here: HW8's PCA reconstruction error, in ROC AUC).

Threshold (tested on constructed runs in tests/test_advisor.py):
  LEARNABLE    0.05  the reference beats the baseline on held-out rows by 5% of it (and by two standard errors
                     of an error rate): something to learn.
"""

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np

from datamodules.lab_hooks import ReferenceData, ReferenceScore, sample_rows

LEARNABLE = 0.05
MAX_SAMPLES = 20_000  # training (and validation) rows the reference sees: seconds, not minutes
ROWS_PER_FEATURE = 2  # features capped at (training rows per class) / this: too few weights to memorize
SELECTION_ROWS = 5_000  # rows its L2 penalty is chosen on (a quarter of them held out)
PCA_ROWS = 2_000  # rows the features' scale (and principal components, when capped) are found on
#: L2 penalties tried, per training row, strongest first (the strongest not clearly worse than the best wins)
PENALTIES = (100.0, 10.0, 1.0, 0.1, 0.01, 1e-3, 1e-4)


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


NO_SIMPLE_REFERENCE = "no simple reference model for this homework, so model bias was not checked"


def reference_score(datamodule) -> tuple[Reference | None, str]:
    """The datamodule's simple reference (its `reference_data` hook), and a line saying why there is none (in
    the student's words: no class or method names)."""
    start = time.perf_counter()
    hook = getattr(datamodule, "reference_data", None)
    data = hook(MAX_SAMPLES) if callable(hook) else None
    if data is None:
        return None, NO_SIMPLE_REFERENCE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices of changing defaults
        reference = fit_reference(data)
    reference.seconds = time.perf_counter() - start  # gathering its rows included: what the advice costs
    return reference, ""


def own_reference(datamodule) -> ReferenceScore | None:
    """The reference the homework scores itself in its own metric (its `reference_score` hook: HW8's PCA
    reconstruction error, HW13's teacher), or None where it gives none."""
    hook = getattr(datamodule, "reference_score", None)
    score = hook(MAX_SAMPLES) if callable(hook) else None
    if score is None:
        return None
    if not isinstance(score, ReferenceScore) or not isinstance(score.monitor, str) or \
            not math.isfinite(float(score.score)):
        raise ValueError(f"it gave {score!r}, not a ReferenceScore with a metric's name and a finite score")
    return score
