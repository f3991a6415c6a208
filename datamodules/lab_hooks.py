"""What a homework gives the lecture lab, so the lab's code never names a homework.

A sixth homework touches only its own files: its DataModule and task declare these, and the advisor
(advisor.py) and `critical` (critical.py) ask for them.

- `DataModule.reference_data(max_samples)` -> `ReferenceData` or None: the inputs and targets of a simple
  reference model (the advisor fits it). `HomeworkDataModule` returns None: "no simple reference for this
  homework", which the diagnosis says.
- `DataModule.reference_score(max_samples)` -> `ReferenceScore` or None: a reference the homework scores
  itself, in its own metric (HW8: PCA reconstruction error's ROC AUC; HW13: the teacher's accuracy, a
  ceiling), for homeworks where a generic classifier or regressor on `reference_data()` means nothing. The
  advisor sets the network's best beside it (a baseline the network does not beat: model bias or
  optimization trouble; a ceiling: only the gap to it), when `monitor` is the task's `monitor`.
- the task's `monitor`/`mode` (the metric that picks the checkpoint) is what the advisor reads "best", "still
  improving" and "turned" in; its `train_loss`/`val_loss` (or `train_acc`/`val_acc`) are the lecture's training
  and validation curves, compared for the gap: `val_loss` must measure on held-out data what `train_loss`
  measures (e.g. anomaly detection: the reconstruction error of held-out *normal* images, not of the
  generated anomalies, which would read as overfitting).
- `task.batch_loss(batch)` -> (loss, how many examples or tokens it averages over): the loss training
  minimizes on one batch, without logging or stepping (critical.py's Hessian). A task without it: `critical`
  says it is not available for this homework.
- `remedies`, a class attribute of the task and of the DataModule: the lecture's remedies as `Remedy`
  entries, each tied to a flag whose value is derived from the run's own settings (so no advice repeats a
  setting already in effect).

This module imports nothing from the project: models and datamodules depend on it, not the other way round.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

#: The lecture's three problems a remedy can address.
PROBLEMS = ("optimization", "bias", "overfitting")


@dataclass
class ReferenceData:
    """The data of the advisor's simple reference model: (a sample of) the training split, and the validation
    split it is scored on (held out), as float features and integer classes or float targets.

    `groups` (optional, one per training row) keeps rows that share a source together when the reference
    chooses its regularization: HW2's frames of one utterance overlap in their windows, so a random split of
    frames would "hold out" near-copies of training rows."""

    task: Literal["classification", "regression"]
    features: str  # what a row holds, in words: "frame windows of 11 x 39 MFCCs"
    train_x: Any  # (n, d) float tensor or array
    train_y: Any  # (n,) int classes or float targets
    val_x: Any
    val_y: Any
    train_total: int  # rows in the whole training split (train_x may be a sample of them)
    val_total: int
    groups: Any = None  # (n,) ints or None


@dataclass
class ReferenceScore:
    """A reference model the homework scores itself (`DataModule.reference_score`): what it is, in the course's
    words, and its score on the validation split in the metric that picks the checkpoint."""

    model: str  # "PCA reconstruction error (64 components)", "the teacher (ResNet-18)"
    monitor: str  # the homework's metric, e.g. "val_auroc"; the same name the task's `monitor` logs
    score: float
    ceiling: bool = False  # True: a bound the model is not expected to pass (a teacher), not a baseline to beat


def sample_rows(n: int, most: int, seed: int):
    """Sorted indices of at most `most` of `n` rows, the same for the same seed (a tensor)."""
    import torch

    if n <= most:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:most].sort().values


@dataclass(frozen=True)
class Remedy:
    """One of the lecture's remedies for `problem` ("optimization", "bias" or "overfitting"), in the course's
    words (`what`), as a flag whose suggested value comes from the run's own value of it:

    - `value`: this value (dropped when the run already uses it);
    - `times`: the run's value times this (each element of a list: hidden sizes); a pair gives two choices
      ("0.3x or 3x the learning rate"); `start` when the run's value is 0 or not a number;
    - `plus`: the run's value plus this (`start` likewise);
    - `ladder`: the next value up the ladder (`plus` +1) or down (-1) from the run's value.
    `most` / `least` bound a derived value; a suggestion equal to the run's value is dropped, and so is the
    remedy when the run's value is one of `unless`. No `flag`: advice in words only ("more data")."""

    problem: str
    what: str
    flag: str | None = None
    value: Any = None
    times: float | tuple[float, ...] | None = None
    plus: float | None = None
    ladder: tuple = ()
    start: Any = None
    most: float | None = None
    least: float | None = None
    odd: bool = False  # keep the value odd (a window centred on its frame)
    unless: tuple = ()  # run values for which the remedy is already in effect (a schedule that warms up)
    note: str = ""  # said after the flag, e.g. "(or fit --find_lr true)"

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:  # (a misspelt problem would never be advised: said at import)
            raise ValueError(f"Remedy {self.what!r}: problem must be one of {PROBLEMS}, not {self.problem!r}")

    def suggest(self, settings: dict) -> str | None:
        """The advice for a run with these settings (flattened `section.name` -> value), or None where it
        would repeat what the run already does or cannot be derived from it."""
        if self.flag is None:
            return self.what
        key = self.flag.removeprefix("--")
        current = settings.get(key)
        if current in self.unless:
            return None
        values = self._values(current, key in settings)
        values = [v for v in values if v is not None and not same(v, current)]
        if not values:
            return None
        text = f"{self.what}: {self.flag} " + " or ".join(render(v) for v in values)
        return text + (f" {self.note}" if self.note else "")

    def _values(self, current: Any, known: bool) -> list:
        if self.value is not None:
            return [self.value]
        if self.ladder:
            if current not in self.ladder:
                return []
            i = self.ladder.index(current) + (1 if (self.plus or 1) > 0 else -1)
            return [self.ladder[i]] if 0 <= i < len(self.ladder) else []
        if not known:
            return []
        number = _is_number(current) or (isinstance(current, list) and current and all(map(_is_number, current)))
        if not number or (_is_number(current) and current == 0 and self.start is not None):
            return [self.start] if self.start is not None else []
        if self.times is not None:
            factors = self.times if isinstance(self.times, tuple) else (self.times,)
            return [self._bound(_scale(current, f)) for f in factors]
        if self.plus is not None:
            return [self._bound(_shift(current, self.plus))]
        return []

    def _bound(self, value):
        if isinstance(value, list):
            return [self._bound(v) for v in value]
        if self.most is not None:
            value = min(value, type(value)(self.most))
        if self.least is not None:
            value = max(value, type(value)(self.least))
        if self.odd and isinstance(value, int) and value % 2 == 0:
            value += 1
        return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scale(value, factor: float):
    if isinstance(value, list):
        return [_scale(v, factor) for v in value]
    if isinstance(value, int):
        return max(1, math.floor(value * factor + 0.5))
    return float(f"{value * factor:.3g}")


def _shift(value, step: float):
    if isinstance(value, list):
        return [_shift(v, step) for v in value]
    if isinstance(value, int) and float(step).is_integer():
        return value + int(step)
    return float(f"{value + step:.3g}")


def same(a, b) -> bool:
    """Whether a suggested value is the run's own (3 == 3.0, "true" == True, [64, 32] == (64, 32))."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def render(value) -> str:
    """A value as typed on the command line: [128,64], true, 0.05."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def flatten_settings(config: dict, prefix: str = "") -> dict:
    """A run's config (config.yaml, nested) as `section.name` -> value; a class is its `class_path` under its
    own key and its init args below it (`model.optimizer` -> "torch.optim.AdamW", `model.optimizer.lr`)."""
    flat = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "class_path" in value:
            flat[name] = value["class_path"]
            flat.update(flatten_settings(value.get("init_args") or {}, name + "."))
        elif isinstance(value, dict):
            flat.update(flatten_settings(value, name + "."))
        else:
            flat[name] = value
    return flat


def advice(problem: str, remedies, settings: dict) -> list[str]:
    """The suggestions of `remedies` for `problem` on a run with `settings`, as lines; entries with the same
    `what` make one line ("a bigger model: --model.encoder_layers 6 --model.decoder_layers 6")."""
    grouped: dict[str, list[str]] = {}
    for remedy in remedies:
        if remedy.problem == problem and (text := remedy.suggest(settings)) is not None:
            what, _, flags = text.partition(": ")
            grouped.setdefault(what, []).append(flags)
    return [what + (": " + " ".join(f for f in flags if f) if any(flags) else "") for what, flags in grouped.items()]
