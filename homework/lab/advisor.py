"""The "practical methodology" lecture applied to a finished fit: a short diagnosis from the run's own numbers.

The lecture's recipe: first compare the training loss with that of a simple model. A network that cannot get
its *training* loss clearly below a linear model's (or below always guessing the commonest class) has
model bias or optimization trouble; one whose training loss is low but validation loss high is overfitting.

The simple reference (`reference_score`), fitted in seconds on the run's own training split:
  HW1  least squares on the same (selected, standardized) features, scored in MSE (the training loss);
  HW2  logistic regression on the frame windows (a subsample), scored in error rate (1 - accuracy);
  HW4  logistic regression on each utterance's mean mel vector (a subsample), error rate;
  HW3  the majority class, error rate (nothing simpler applies to raw images);
  HW5  none: no simple translation model compares with a Transformer's loss, so only the training /
       validation checks run (overfitting, still improving, mismatch).
Classification compares error rates, not losses: label smoothing (HW3), the additive margin (HW4) and
MixUp change what the training loss measures, while accuracy means the same for every model.

Thresholds (module constants below, tested on constructed runs in tests/test_advisor.py):
  BIAS_MARGIN  0.10  training value not at least 10% below the reference's: model bias or optimization trouble;
                     above the reference's outright: optimization (the network can represent the reference,
                     so a bigger model with a higher training loss points to optimization, not model bias);
  GAP_RATIO    2.0   final validation value at least twice the final training value: overfitting;
  RISE         0.10  validation value 10% above its best by the end while the training value kept falling:
                     overfitting (the curve turned), whatever the gap;
  LATE         0.10  the best validation epoch in the last 10% of epochs, and the validation value 1%
                     (STILL_FALLING) lower than 10% of the epochs before: still improving, train longer;
  MISMATCH     2.0   validation already twice the training value after the first epoch (before any
                     overfitting), or below half of it at every epoch: the splits may differ in distribution.
Comparing with earlier runs of other model sizes (runs/hwN/*/run.json) is not done yet.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

BIAS_MARGIN = 0.10
GAP_RATIO = 2.0
RISE = 0.10
LATE = 0.10
STILL_FALLING = 0.01
MISMATCH = 2.0
MAX_SAMPLES = 20_000  # training rows for a logistic-regression reference: seconds, not minutes


@dataclass
class Reference:
    """A simple model's training and validation value, in the quantity the diagnosis compares."""

    name: str  # e.g. "least squares on the 117 features"
    quantity: str  # "MSE" (lower is better) or "error rate"
    train: float
    val: float
    seconds: float


@dataclass
class Diagnosis:
    verdict: str  # "model bias or optimization trouble" | "optimization trouble" | "overfitting" | "healthy"
    evidence: list[str]  # the statements the verdict rests on, each with its numbers
    remedies: list[str]  # the lecture's remedies as this homework's flags
    notes: list[str] = field(default_factory=list)  # still improving, mismatch, what was not checked


# --- the reference model ----------------------------------------------------------------------
def reference_data(datamodule) -> tuple[str, tuple] | None:
    """(kind, (train_x, train_y, val_x, val_y)) from a datamodule set up for fit; kind "regression",
    "features" (logistic regression) or "labels" (majority class: x is None). None: no simple reference."""
    homework = getattr(datamodule, "homework", None)
    if homework == "hw1" and getattr(datamodule, "train_x", None) is not None:
        names = datamodule.layout.feature_names
        return "regression", (datamodule.transform(datamodule.train_x, names), datamodule.train_y,
                              datamodule.transform(datamodule.val_x, names), datamodule.val_y)
    if homework == "hw2" and getattr(datamodule, "train_source", None) is not None and len(datamodule.val_rows):
        def windows(rows, labels, seed):
            pick = _subsample(len(rows), seed)
            return datamodule.train_source.windows(rows[pick]).flatten(1), labels[pick]

        return "features", (*windows(datamodule.train_rows, datamodule.train_y, 0),
                            *windows(datamodule.val_rows, datamodule.val_y, 1))
    if homework == "hw4" and getattr(datamodule, "train_packed", None) is not None and len(datamodule.val_index):
        packed, labels = datamodule.train_packed, datamodule.labels

        def mean_mels(index, seed):
            index = index[_subsample(len(index), seed)]
            return torch.stack([packed[int(k)].float().mean(0) for k in index]), labels[index]

        return "features", (*mean_mels(datamodule.train_index, 0), *mean_mels(datamodule.val_index, 1))
    if homework == "hw3" and getattr(datamodule, "train", None) is not None and getattr(datamodule, "valid", None):
        train, valid = datamodule.train, datamodule.valid
        return "labels", (None, train.labels[train.keep], None, valid.labels[valid.keep])
    return None


def _subsample(n: int, seed: int) -> torch.Tensor:
    if n <= MAX_SAMPLES:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:MAX_SAMPLES].sort().values


def reference_score(datamodule) -> Reference | None:
    """Fit the simple model on the datamodule's training split (after `setup("fit")`) and score it on both
    splits. None where no simple reference applies (HW5) or the data is not loaded."""
    data = reference_data(datamodule)
    if data is None:
        return None
    kind, (train_x, train_y, val_x, val_y) = data
    start = time.perf_counter()
    if kind == "regression":
        from sklearn.linear_model import LinearRegression

        x, xv = train_x.double().numpy(), val_x.double().numpy()
        y, yv = train_y.double().numpy(), val_y.double().numpy()
        fitted = LinearRegression().fit(x, y)
        train, val = (float(np.mean((fitted.predict(a) - b) ** 2)) for a, b in ((x, y), (xv, yv)))
        name, quantity = f"least squares on the same {x.shape[1]} features", "MSE"
    elif kind == "features":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = train_x.float().numpy(), train_y.numpy()
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=100))
        with warnings.catch_warnings():  # 100 iterations are plenty for a baseline; not converging is fine
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        train = 1 - float(model.score(x, y))
        val = 1 - float(model.score(val_x.float().numpy(), val_y.numpy()))
        what = "frame windows" if datamodule.homework == "hw2" else "mean mel vectors"
        name, quantity = f"logistic regression on {len(x)} training {what} ({x.shape[1]} features)", "error rate"
    else:
        majority = int(torch.bincount(train_y).argmax())
        train = 1 - float((train_y == majority).float().mean())
        val = 1 - float((val_y == majority).float().mean())
        name, quantity = f"always the majority class ({majority})", "error rate"
    return Reference(name, quantity, train, val, time.perf_counter() - start)


# --- the diagnosis ----------------------------------------------------------------------------
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


def diagnose(history: dict, reference: Reference | None, remedies: dict[str, list[str]] | None = None) -> Diagnosis | None:
    """The verdict from the per-epoch history (`LearningCurvePlot.history`: name -> [(epoch, value)]) and the
    reference (see the module docstring for the thresholds). None: no training and validation curves."""
    found = curves(history, reference)
    if found is None:
        return None
    quantity, train, val = found
    remedies = remedies or REMEDIES["default"]
    n, t_end, v_end = len(val), train[-1][1], val[-1][1]
    best_epoch, v_best = min(val, key=lambda p: p[1])
    train_at = dict(train)
    notes, evidence = [], []
    ends = f"final training {quantity} {t_end:.4g} (epoch {train[-1][0]}), validation {v_end:.4g}"
    if reference is not None and t_end > (1 - BIAS_MARGIN) * reference.train:
        above = t_end > reference.train
        verdict = "optimization trouble" if above else "model bias or optimization trouble"
        evidence.append(f"training {quantity} {t_end:.4g} is {'above' if above else 'not 10% below'} the "
                        f"reference's {reference.train:.4g} ({reference.name}; validation {reference.val:.4g})")
        if above:
            evidence.append("the network can represent the reference, so a higher training loss points to "
                            "optimization, not model bias (a bigger model with a higher training loss is the same sign)")
        fix = remedies["optimization"] + ([] if above else remedies["bias"])
    else:
        rose = best_epoch < val[-1][0] and v_end >= (1 + RISE) * v_best and t_end < train_at.get(best_epoch, math.inf)
        gap = v_end >= GAP_RATIO * t_end and v_end > 0
        if reference is not None:
            evidence.append(f"training {quantity} {t_end:.4g} is clearly below the reference's {reference.train:.4g} "
                            f"({reference.name}), so neither model bias nor optimization holds it back")
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
            fix = remedies["overfitting"]
        else:
            verdict = "healthy"
            evidence.append(f"{ends}: gap {v_end / max(t_end, 1e-12):.2f}x (overfitting from {GAP_RATIO:g}x), "
                            f"validation within {RISE:.0%} of its best {v_best:.4g} (epoch {best_epoch})")
            fix = []
    # still improving at the end: the best validation epoch is among the last ones and training still falls
    window = max(1, math.ceil(LATE * n))
    if n > window and best_epoch >= val[-window][0]:
        earlier = val[-1 - window][1]
        if v_end < (1 - STILL_FALLING) * earlier:
            notes.append(f"still improving at the end: validation {quantity} {earlier:.4g} -> {v_end:.4g} over the "
                         f"last {window} epoch(s), best at the last epochs ({best_epoch}); train longer "
                         f"({remedies['longer'][0]})")
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
    if reference is not None and reference.val < v_best:
        notes.append(f"the reference validates better than the network's best ({reference.val:.4g} vs {v_best:.4g} "
                     f"at epoch {best_epoch}): a simpler model or fewer features may be the better submission")
    if reference is None:
        notes.append("no simple reference model for this homework, so model bias was not checked")
    return Diagnosis(verdict, evidence, fix, notes)


def format_diagnosis(d: Diagnosis, reference: Reference | None = None) -> str:
    """A few lines for the terminal and W&B: the verdict, its numbers, the remedies as flags, the notes."""
    lines = [f"Diagnosis (practical methodology): {d.verdict}"]
    lines += [f"  - {e}" for e in d.evidence]
    if d.remedies:
        lines.append("  try: " + "; ".join(d.remedies))
    lines += [f"  note: {n}" for n in d.notes]
    if reference is not None:
        lines.append(f"  (reference fitted in {reference.seconds:.1f} s on the training split)")
    return "\n".join(lines)


# --- the lecture's remedies, as each homework's flags ------------------------------------------
_COMMON_OPT = ["a smaller or larger --model.optimizer.lr", "--model.optimizer torch.optim.AdamW",
               "warmup: --model.lr_scheduler callbacks.WarmupCosineLR"]
REMEDIES: dict[str, dict[str, list[str]]] = {
    "default": {"optimization": _COMMON_OPT, "bias": ["a bigger model"],
                "overfitting": ["more data", "--model.optimizer.weight_decay", "--early_stopping.patience"],
                "longer": ["--trainer.max_epochs"]},
    "hw1": {"optimization": _COMMON_OPT + ["normalization: --data.normalize true, --model.batch_norm true"],
            "bias": ["more flexibility: --model.hidden_dims [128,64,32]", "more features: --data.features all"],
            "overfitting": ["fewer features: --data.features 16", "fewer parameters: --model.hidden_dims [16]",
                            "regularization: --model.optimizer.weight_decay 0.05", "dropout: --model.dropout 0.2",
                            "earlier stopping: --early_stopping.patience 50", "more data: --data.val_ratio 0.1"],
            "longer": ["--trainer.max_epochs 1200"]},
    "hw2": {"optimization": _COMMON_OPT + ["normalization: --model.batch_norm true"],
            "bias": ["more context: --data.concat_nframes 31", "more model: --model.hidden_dim 256 --model.num_layers 3"],
            "overfitting": ["dropout: --model.dropout 0.5", "regularization: --model.optimizer.weight_decay 0.05",
                            "fewer parameters: --model.hidden_dim 64", "earlier stopping: --early_stopping.patience 2"],
            "longer": ["--trainer.max_epochs 10"]},
    "hw3": {"optimization": _COMMON_OPT,
            "bias": ["a bigger network: --model.net resnet34", "larger images: --data.image_size 160"],
            "overfitting": ["augmentation: --data.auto_augment trivial --data.random_erasing 0.25",
                            "mixing: --data.mixup_alpha 0.2 --data.cutmix_alpha 1.0",
                            "regularization: --model.optimizer.weight_decay 0.1 --model.label_smoothing 0.1",
                            "earlier stopping: --early_stopping.patience 5"],
            "longer": ["--trainer.max_epochs 40"]},
    "hw4": {"optimization": _COMMON_OPT,
            "bias": ["a bigger model: --model.d_model 160 --model.num_layers 4", "longer crops: --data.segment_len 256"],
            "overfitting": ["dropout: --model.dropout 0.2", "regularization: --model.optimizer.weight_decay 0.05",
                            "fewer parameters: --model.num_layers 1", "earlier stopping: --early_stopping.patience 3"],
            "longer": ["--trainer.max_epochs 40"]},
    "hw5": {"optimization": _COMMON_OPT + ["gradient clipping: --trainer.gradient_clip_val 1.0"],
            "bias": ["a bigger model: --model.encoder_layers 6 --model.decoder_layers 6"],
            "overfitting": ["dropout: --model.dropout 0.3", "label smoothing: --model.label_smoothing 0.1",
                            "earlier stopping: --early_stopping.patience 3"],
            "longer": ["--trainer.max_epochs 60"]},
}


def remedy_flags(homework: str) -> set[str]:
    """Every `--section.name` flag the remedies of `homework` mention (tests check each one exists)."""
    import re

    return {flag for texts in REMEDIES[homework].values() for text in texts
            for flag in re.findall(r"--[\w.]+", text)}


def _history(trainer) -> dict | None:
    from callbacks import LearningCurvePlot

    curve = next((c for c in trainer.callbacks if isinstance(c, LearningCurvePlot)), None)
    return None if curve is None else dict(curve.history)


def advise(trainer, model, datamodule) -> str | None:
    """What the CLI prints after a fit (and logs to W&B): the diagnosis, or None when there is nothing to
    say (no learning-curve history, no validation). The reference takes seconds on the training split."""
    history = _history(trainer)
    if not history:
        return None
    reference = reference_score(datamodule) if "val_loss" in history or "val_acc" in history else None
    homework = getattr(datamodule, "homework", "default")
    diagnosis = diagnose(history, reference, REMEDIES.get(homework, REMEDIES["default"]))
    return None if diagnosis is None else format_diagnosis(diagnosis, reference)
