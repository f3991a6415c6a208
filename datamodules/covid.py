"""HW1: COVID-19 cases prediction from the Delphi survey CSVs (ML2021, ML2022, ML2023 layouts)."""

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.errors import DataError
from datamodules.base import (SAMPLE_SEED, HomeworkDataModule, MinibatchesPerStep, batch_loader,
                              check_folds, split_indices)
from datamodules.lab_hooks import ReferenceData, Remedy, sample_rows

TARGET = "tested_positive"


@dataclass(frozen=True)
class CovidLayout:
    """One year's CSV format: the state one-hot columns, then `days` blocks of the same signals.

    Column names repeat across days with no suffix; the last day's `tested_positive` is the
    target (present in the training file only). Features are named `<signal>_day<d>`.
    """

    name: str
    train_file: str
    test_file: str
    states: tuple[str, ...]
    signals: tuple[str, ...]
    days: int
    metric: str  # what Kaggle grades: "mse" or "rmse"

    def header(self, train: bool) -> list[str]:
        columns = ["id", *self.states, *(self.signals * self.days)]
        return columns if train else columns[:-1]

    def column_names(self, train: bool) -> list[str]:
        """Unique names for the header's columns: signals get a `_day<d>` suffix."""
        days = [f"{s}_day{d}" for d in range(1, self.days + 1) for s in self.signals]
        return ["id", *self.states, *(days if train else days[:-1])]

    @property
    def feature_names(self) -> list[str]:
        return self.column_names(train=False)[1:]

    def describe_column(self, index: int) -> str:
        """How a student finds column `index` in the CSV: its header name, position and day block."""
        name = self.header(train=True)[index]
        day = (index - 1 - len(self.states)) // len(self.signals) + 1
        where = f"column {index + 1}" + (f", day {day} of {self.days}" if day >= 1 else "")
        return f"'{name}' ({where})"


ML2021 = CovidLayout(
    "ml2021", "covid.train.csv", "covid.test.csv",
    states=tuple("AL AK AZ AR CA CO CT FL GA ID IL IN IA KS KY LA MD MA MI MN MS MO NE NV NJ NM NY NC OH OK "
                 "OR PA RI SC TX UT VA WA WV WI".split()),
    signals=tuple("cli ili hh_cmnty_cli nohh_cmnty_cli wearing_mask travel_outside_state work_outside_home shop "
                  "restaurant spent_time large_event public_transit anxious depressed felt_isolated "
                  "worried_become_ill worried_finances tested_positive".split()),
    days=3, metric="rmse")
ML2022 = CovidLayout(
    "ml2022", "covid.train.csv", "covid.test.csv",
    states=tuple("AL AK AZ AR CA CO CT FL GA ID IL IN IA KS KY LA MD MA MI MN MS MO NE NV NJ NM NY NC OH OK "
                 "OR RI SC TX UT VA WA".split()),
    signals=tuple("cli ili hh_cmnty_cli nohh_cmnty_cli wearing_mask travel_outside_state work_outside_home shop "
                  "restaurant spent_time large_event public_transit anxious depressed worried_finances "
                  "tested_positive".split()),
    days=5, metric="mse")
ML2023 = CovidLayout(
    "ml2023", "covid_train.csv", "covid_test.csv",
    states=tuple("AL AZ CA CO CT FL GA IL IN IA KS KY LA ME MD MA MI MN MO NJ NM NY NC OH OK OR PA SC TN TX "
                 "VA WA WV WI".split()),
    signals=tuple("cli ili wnohh_cmnty_cli wbelief_masking_effective wbelief_distancing_effective "
                  "wcovid_vaccinated_friends wlarge_event_indoors wothers_masked_public wothers_distanced_public "
                  "wshop_indoors wrestaurant_indoors wworried_catch_covid hh_cmnty_cli nohh_cmnty_cli "
                  "wearing_mask_7d public_transit worried_finances tested_positive".split()),
    days=3, metric="mse")
LAYOUTS = (ML2021, ML2022, ML2023)


@dataclass(frozen=True)
class CovidFiles:
    layout: CovidLayout
    train: Path
    test: Path


def read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # (Excel saves CSVs with a BOM)
        header = next(csv.reader(f), None)
    if not header:
        raise DataError(f"{path}: the file is empty (no header row)")
    return [name.strip() for name in header]


def match_layout(path: Path, train: bool) -> CovidLayout:
    """The layout whose header `path` has; a DataError naming missing/unexpected columns otherwise."""
    header = read_header(path)
    candidates = [lay for lay in LAYOUTS if path.name in (lay.train_file, lay.test_file)] or list(LAYOUTS)
    for layout in candidates:
        if header == layout.header(train):
            return layout

    def diff(layout: CovidLayout) -> tuple[list[str], list[str]]:
        import pandas as pd

        want, have = pd.Series(layout.header(train)).value_counts(), pd.Series(header).value_counts()
        missing = [c for c, n in want.items() if have.get(c, 0) < n]
        unexpected = [c for c, n in have.items() if want.get(c, 0) < n]
        return missing, unexpected

    closest = min(candidates, key=lambda lay: sum(map(len, diff(lay))))
    missing, unexpected = diff(closest)
    kind = "training" if train else "test"
    if not missing and not unexpected:
        problem = "has the right columns in the wrong order"
    else:
        problem = (f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                   f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    raise DataError(f"{path}: columns match no known HW1 {kind} layout (closest {closest.name.upper()}, "
                    f"{len(closest.header(train))} columns; this file has {len(header)}): {problem}")


def read_values(path: Path, layout: CovidLayout) -> np.ndarray:
    """All values of the CSV as float32, refusing non-numeric, missing and infinite values with a clear message."""
    import pandas as pd

    frame = pd.read_csv(path, header=0, encoding="utf-8-sig")
    if len(frame) == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    for i, column in enumerate(frame.columns):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{path}: non-numeric value {frame[column].iloc[row]!r} on line {row + 2}, "
                            f"column {layout.describe_column(i)}")
        frame[column] = values
    array = frame.to_numpy(dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        row, col = map(int, np.argwhere(~finite)[0])
        kind = "missing value (NaN)" if np.isnan(array[row, col]) else "infinite value"
        raise DataError(f"{path}: {kind} on line {row + 2}, column {layout.describe_column(col)}")
    return array


@dataclass
class FeatureTransform:
    """Which features go in and how they are standardized: fitted on the training split only."""

    names: list[str]
    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, x: torch.Tensor, all_names: list[str]) -> torch.Tensor:
        index = [all_names.index(n) for n in self.names]
        return (x[:, index] - self.mean) / self.std


class CovidDataModule(HomeworkDataModule[CovidFiles]):
    """HW1 data: the whole CSV held in memory as tensors, batched without per-sample overhead.

    The default split is the official sample's (20% validation, seed 5201314), so scores compare
    with it; `num_folds` and `fold` select k-fold cross-validation instead.

    Args:
        data_dir: Folder with the Kaggle CSVs (or a folder one level above it). None: data/hw1, else a demo set.
        features: "all"; a number k (the k best features by F-score on the training split); or a list of
            names: a feature (tested_positive_day4), a signal for all its days (tested_positive), a state
            code, or "states". The id column is never a feature.
        normalize: Standardize each feature with the training split's mean and std.
        batch_size: Samples per minibatch.
        val_ratio: Share of the training file held out for validation.
        seed: Seed of the train/validation split (5201314 is the sample code's).
        num_folds: k of k-fold cross-validation (with fold); None: the random split.
        fold: Which fold (0..k-1) validates; "all" trains every fold and reports mean ± std.
        minibatches_per_step: Minibatches one Lightning step trains on ("epoch": all of them; 1 is needed by
            gradient clipping, gradient accumulation and several devices).
    """

    homework = "hw1"
    kaggle_competition = "ml2022spring-hw1"
    course_files = {"covid.train.csv": "1kLSW_-cW2Huj7bh84YTdimGBOJaODiOS",  # (the ML2022 sample code's)
                    "covid.test.csv": "1iiI5qROrAhZn-o4FPqsE97bMzDEFvIdg"}
    expected_files = "covid.train.csv + covid.test.csv (ML2021/ML2022) or covid_train.csv + covid_test.csv (ML2023)"
    remedies = (
        Remedy("optimization", "normalization", "--data.normalize", value=True),
        Remedy("bias", "more features", "--data.features", value="all"),
        Remedy("overfitting", "fewer features", "--data.features", times=0.5, start=16),
        Remedy("overfitting", "more training data", "--data.val_ratio", times=0.5),
    )

    def __init__(
        self,
        data_dir: str | None = None,
        features: int | list[str] | str = "all",
        normalize: bool = True,
        batch_size: int = 256,
        val_ratio: float = 0.2,
        seed: int = SAMPLE_SEED,
        num_folds: int | None = None,
        fold: int | None = None,
        minibatches_per_step: MinibatchesPerStep = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_folds(num_folds, fold)
        self.minibatches_per_step = minibatches_per_step
        self.data_dir, self.files, self.is_demo = self.resolve_data_dir(data_dir)
        self.layout = self.files.layout
        self.kaggle_competition = f"{self.layout.name}spring-hw1"
        self.selected = self._resolve_features(features)
        self.transform: FeatureTransform | None = None
        self.train_x = self.train_y = self.val_x = self.val_y = self.test_x = None

    @property
    def num_features(self) -> int:
        """How many features the model gets (linked to `model.in_features` by the CLI)."""
        return self.selected if isinstance(self.selected, int) else len(self.selected)

    # --- finding and writing the files -------------------------------------------------------
    @classmethod
    def find_layout(cls, directory: Path) -> CovidFiles | None:
        for train_name, test_name in {(lay.train_file, lay.test_file) for lay in LAYOUTS}:
            train, test = directory / train_name, directory / test_name
            if not train.exists() and not test.exists():
                continue
            if not (train.exists() and test.exists()):
                present, absent = (train, test) if train.exists() else (test, train)
                raise DataError(f"{directory}: found {present.name} but not {absent.name}; both come in the Kaggle zip")
            layout = match_layout(train, train=True)
            if match_layout(test, train=False) != layout:
                raise DataError(f"{test}: test file is from a different year's layout than {train.name}")
            return CovidFiles(layout, train, test)
        return None

    @classmethod
    def write_demo(cls, directory: Path) -> None:
        write_demo_covid(directory)

    # --- feature selection ------------------------------------------------------------------
    def _resolve_features(self, features: int | list[str] | str) -> int | list[str]:
        names = self.layout.feature_names
        if features == "all":
            return list(names)
        if isinstance(features, int):
            if not 1 <= features <= len(names):
                raise DataError(f"--data.features {features}: choose k between 1 and {len(names)} "
                                f"({self.layout.name.upper()} has {len(names)} features)")
            return features
        if isinstance(features, str):
            features = [features]
        chosen: list[str] = []
        for item in features:
            if item == "states":
                matches = list(self.layout.states)
            elif item in names:
                matches = [item]
            else:
                matches = [n for n in names if n.rsplit("_day", 1)[0] == item and n not in self.layout.states]
            if not matches:
                hint = "" if item != "id" else " (the id column is never a feature)"
                raise DataError(f"--data.features: unknown feature '{item}'{hint}; use a signal such as "
                                f"'{self.layout.signals[0]}', a day such as '{names[-1]}', a state code or 'states'")
            chosen += [m for m in matches if m not in chosen]
        return [n for n in names if n in chosen]  # keep file order

    def _fit_transform(self, x: torch.Tensor, y: torch.Tensor) -> FeatureTransform:
        names = self.layout.feature_names
        if isinstance(self.selected, int):
            from sklearn.feature_selection import f_regression

            with np.errstate(divide="ignore", invalid="ignore"):
                scores, _ = f_regression(x.numpy(), y.numpy())
            scores = np.nan_to_num(scores, nan=-np.inf)
            best = sorted(np.argsort(-scores, kind="stable")[: self.selected])
            chosen = [names[i] for i in best]
        else:
            chosen = self.selected
        x = x[:, [names.index(n) for n in chosen]]
        if self.hparams.normalize:
            mean, std = x.mean(0), x.std(0)
            std = torch.where(std > 0, std, torch.ones_like(std))  # constant column (e.g. an absent state)
        else:
            mean, std = torch.zeros(len(chosen)), torch.ones(len(chosen))
        return FeatureTransform(chosen, mean, std)

    # --- Lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "predict":
            self._read_test_file()
        else:
            self._read_training_file()

    def _read_test_file(self) -> None:
        if self.test_x is None:
            self.test_x = torch.from_numpy(read_values(self.files.test, self.layout))[:, 1:]

    def check_test_data(self) -> None:
        self._read_test_file()

    def _read_training_file(self) -> None:
        """Read and split the training CSV, and fit feature selection + scaling on the training split."""
        if self.train_x is not None:
            return
        values = torch.from_numpy(read_values(self.files.train, self.layout))
        features, target = values[:, 1:-1], values[:, -1]  # column 0 is the id: never a feature
        train_idx, val_idx = split_indices(len(values), self.hparams.val_ratio, self.hparams.seed,
                                           self.hparams.num_folds, self.hparams.fold)
        self.train_x, self.train_y = features[train_idx], target[train_idx]
        self.val_x, self.val_y = features[val_idx], target[val_idx]
        self.transform = self._fit_transform(self.train_x, self.train_y)

    def reference_data(self, max_samples: int) -> ReferenceData:
        """The same selected, standardized features the network gets, and the target."""
        self._read_training_file()
        names = self.layout.feature_names
        train, val = sample_rows(len(self.train_x), max_samples, 0), sample_rows(len(self.val_x), max_samples, 1)
        return ReferenceData("regression", "the network's own (selected, standardized) features",
                             self.transform(self.train_x[train], names), self.train_y[train],
                             self.transform(self.val_x[val], names), self.val_y[val],
                             len(self.train_x), len(self.val_x))

    #: Rows per predict batch, however many processes predict: a matrix product's last bits depend on its size,
    #: so the same batches are what makes a multi-device submission identical to a one-process one.
    predict_rows = 64

    def _loader(self, x: torch.Tensor, *rest: torch.Tensor, train: bool = False) -> DataLoader:
        """Training batches of `batch_size`; validation in one batch per process (a few hundred rows: each
        extra Lightning step would cost more than the whole forward pass); prediction in `predict_rows`."""
        x = self.transform(x, self.layout.feature_names)
        if train:
            return batch_loader(x, *rest, batch_size=self.hparams.batch_size, shuffle=True,
                                minibatches_per_step=self.minibatches_per_step)
        per_process = max(1, math.ceil(len(x) / (self.trainer.world_size if self.trainer is not None else 1)))
        return batch_loader(x, *rest, batch_size=per_process if rest else min(per_process, self.predict_rows),
                            shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_x, self.train_y, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_x, self.val_y)

    def predict_dataloader(self) -> DataLoader:
        if self.transform is None:  # no checkpoint supplied the fitted transform: fit it now
            self._read_training_file()
        return self._loader(self.test_x)

    def state_dict(self) -> dict:
        """Saved in checkpoints, so `predict` uses exactly the features and scaling the model was trained on."""
        t = self.transform
        return {} if t is None else {"features": t.names, "mean": t.mean, "std": t.std}

    def load_state_dict(self, state: dict) -> None:
        if state:
            unknown = [n for n in state["features"] if n not in self.layout.feature_names]
            if unknown:  # trained on another year's layout: its features are not in these files
                ckpt = getattr(self.trainer, "ckpt_path", None) or "the checkpoint"
                raise DataError(f"{self.files.train.parent}: the model in {ckpt} was trained on features these "
                                f"{self.layout.name.upper()} files do not have ({', '.join(unknown[:3])}"
                                f"{', ...' if len(unknown) > 3 else ''}); use it with files of the year it was "
                                f"trained on")
            self.transform = FeatureTransform(list(state["features"]), state["mean"], state["std"])

    # --- Kaggle export ----------------------------------------------------------------------
    submission_filename = "pred.csv"
    submission_columns = ["id", TARGET]

    @property
    def num_test_samples(self) -> int:
        return len(self.test_x)

    def to_submission(self, predictions: torch.Tensor) -> "pd.DataFrame":  # noqa: F821 (imported when used)
        """`id,tested_positive` with ids 0..N-1 in test-file order, as the official sample writes it."""
        import pandas as pd

        return pd.DataFrame({"id": np.arange(len(predictions)), TARGET: predictions.float().numpy()})


def write_demo_covid(directory: Path, layout: CovidLayout = ML2022, num_train: int = 1500,
                     num_test: int = 500, seed: int = 0) -> None:
    """A synthetic set in the real file format: a latent epidemic level drives every signal.

    `tested_positive` follows the level with state offsets and noise, so the task is learnable
    (yesterday's value helps most, as in the real data) but not trivial.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    n, n_states, n_signals = num_train + num_test, len(layout.states), len(layout.signals)
    state = rng.integers(n_states, size=n)
    state_offset = rng.normal(0, 2.0, size=n_states)
    level = rng.uniform(0.2, 1.0, size=n)
    loadings = rng.uniform(-1, 1, size=n_signals)
    base = rng.uniform(5, 60, size=n_signals)
    blocks = []
    for _ in range(layout.days):
        level = np.clip(level + rng.normal(0, 0.05, size=n), 0.05, None)
        signals = base + 10 * np.outer(level, loadings) + rng.normal(0, 1.0, size=(n, n_signals))
        signals[:, -1] = 2 + 20 * level + state_offset[state] + rng.normal(0, 0.8, size=n)  # tested_positive
        blocks.append(signals)
    one_hot = np.eye(n_states)[state]
    rows = np.hstack([one_hot, *blocks])
    directory.mkdir(parents=True, exist_ok=True)
    for name, part, train in ((layout.train_file, rows[:num_train], True), (layout.test_file, rows[num_train:], False)):
        values = part if train else part[:, :-1]
        frame = pd.DataFrame(np.hstack([np.arange(len(values))[:, None], values]), columns=layout.header(train))
        frame.to_csv(directory / name, index=False, float_format="%.8g")  # one-hots print as 0/1, like Kaggle's
