"""The search space of `tune`: a YAML file over the command line's options (homework/configs/hwN_space.yaml).

    model.optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}    # a float, sampled on a log scale
    model.dropout: {uniform: [0.0, 0.5]}                  # a float, on a linear scale
    model.num_layers: {int: [1, 4]}                       # a whole number, both ends included
    data.features: [16, 24, 32, all]                      # one of these (categorical)
    model.hidden_dims: [[64, 32], [128, 64], [32]]        # one of these lists
    model.optimizer:                                      # a class, each with its own arguments
      torch.optim.AdamW: {lr: {loguniform: [1.0e-4, 1.0e-2]}, weight_decay: {loguniform: [1.0e-4, 0.1]}}
      torch.optim.SGD: {lr: {loguniform: [1.0e-3, 0.1]}, momentum: 0.9}
    trainer.max_epochs: 100                               # one value: fixed for every trial

A key is any option of `fit` without its dashes (`python homework/hwN.py fit --help`). A class choice maps each
class path to its arguments (ranges, lists or fixed values; `{}` or nothing: the class's own defaults); a named
class starts from its own defaults, not the recipe's (see homework/cli/arguments.py). Each trial's values become
command-line flags (`flags`), so a trial is exactly the fit those flags describe.

A mistake is one line naming the file, before anything runs (`load`); whether every key is an option and every
value fits its option's type is checked by the CLI's own parser (tune.py parses one command line per choice).
"""
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from datamodules.errors import DataError

RANGES = ("loguniform", "uniform", "int")
KEY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
CLASS_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


@dataclass
class Param:
    """One searched option: `kind` is loguniform, uniform, int, choice (a list), fixed, or class."""

    key: str  # the option, e.g. model.optimizer.lr
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: list = field(default_factory=list)  # choice: the values; fixed: the one value
    branches: dict[str, list["Param"]] = field(default_factory=dict)  # class: class path -> its arguments
    name: str = ""  # the parameter's name in the study (a class's arguments carry the class's short name)

    def examples(self) -> list[list[tuple[str, object]]]:
        """Every value worth type-checking, each as the (option, value) pairs it sets: both ends of a range,
        every choice, every class with its arguments' examples."""
        if self.kind in ("loguniform", "uniform"):
            return [[(self.key, float(self.low))], [(self.key, float(self.high))]]
        if self.kind == "int":
            return [[(self.key, int(self.low))], [(self.key, int(self.high))]]
        if self.kind in ("choice", "fixed"):
            return [[(self.key, value)] for value in self.choices]
        found = []
        for cls, args in self.branches.items():
            options = [arg.examples() for arg in args]
            for i in range(max([len(o) for o in options] + [1])):
                found.append([(self.key, cls)] + [pair for o in options for pair in o[i % len(o)]])
        return found


def short(cls: str) -> str:
    return cls.rpartition(".")[2]


def load(path: Path) -> list[Param]:
    """The space in `path`, or a DataError `<path>: <problem>`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (a search space is a YAML file, e.g. homework/configs/hw1_space.yaml)") \
            from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or type(err).__name__})") from None
    try:
        space = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DataError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    try:
        return parse(space)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def parse(space: object) -> list[Param]:
    if not isinstance(space, dict) or not space:
        raise DataError("a search space maps options to ranges, e.g. `model.optimizer.lr: {loguniform: [1e-4, 1e-2]}`")
    params = []
    for key, spec in space.items():
        key = str(key).removeprefix("--")
        if not KEY.match(key):
            raise DataError(f"'{key}' is not an option name (write it as on the command line without dashes, "
                            f"e.g. model.optimizer.lr)")
        params.append(_param(key, spec, key))
    if not any(p.kind != "fixed" for p in params):
        raise DataError("nothing to search: every option has one fixed value")
    return params


def _param(key: str, spec: object, name: str) -> Param:
    if isinstance(spec, list):
        if not spec:
            raise DataError(f"{key}: an empty list of choices")
        if len({_text(v) for v in spec}) != len(spec):
            raise DataError(f"{key}: a choice is listed twice")
        return Param(key, "choice" if len(spec) > 1 else "fixed", choices=list(spec), name=name)
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in RANGES:
        (kind, bounds), = spec.items()
        return _range(key, kind, bounds, name)
    if isinstance(spec, dict) and spec and all(CLASS_PATH.match(str(k)) for k in spec):
        branches = {}
        for cls, args in spec.items():
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise DataError(f"{key}: {cls}: give the class's arguments as a mapping (e.g. {{lr: {{loguniform: "
                                f"[1e-4, 1e-2]}}}}), or {{}} for its defaults; got {args!r}")
            branches[cls] = [_param(f"{key}.{arg}", value, f"{key}.{arg} ({short(cls)})")
                             for arg, value in args.items()]
        return Param(key, "class" if len(branches) > 1 else "fixed_class", branches=branches, name=name)
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in RANGES]
        raise DataError(f"{key}: unknown range {unknown[0]!r}: write {{loguniform: [a, b]}}, {{uniform: [a, b]}}, "
                        f"{{int: [a, b]}}, a list of choices, or class paths (with dots) mapped to their arguments")
    return Param(key, "fixed", choices=[spec], name=name)


def _range(key: str, kind: str, bounds: object, name: str) -> Param:
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise DataError(f"{key}: {kind} takes [low, high]; got {bounds!r}")
    low, high = (_number(b) for b in bounds)  # (YAML reads 1e-4, without a dot, as text)
    numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in (low, high))
    if kind == "int" and not (numbers and all(float(b).is_integer() for b in (low, high))):
        raise DataError(f"{key}: int takes two whole numbers [low, high]; got {bounds!r}")
    if not numbers or not all(math.isfinite(b) for b in (low, high)):
        raise DataError(f"{key}: {kind} takes two numbers [low, high]; got {bounds!r}")
    if low >= high:
        raise DataError(f"{key}: {kind} [{low}, {high}] is an empty range: low must be below high")
    if kind == "loguniform" and low <= 0:
        raise DataError(f"{key}: loguniform [{low}, {high}] needs low > 0 (a log scale); use uniform from 0")
    if kind == "int":
        low, high = int(low), int(high)
    return Param(key, kind, low, high, name=name)


def _number(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _text(value: object) -> str:
    """A value as the command line takes it: text as is, anything else as YAML in one line (`[64, 32]`)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def flag_pairs(pairs: list[tuple[str, object]]) -> list[str]:
    return [token for key, value in pairs for token in (f"--{key}", _text(value))]


def suggest(trial, params: list[Param]) -> list[tuple[str, object]]:
    """The trial's (option, value) pairs, sampled with Optuna's `suggest_*` (a class's arguments only when the
    trial picked that class). Lists and other non-scalar choices are suggested by their text."""
    pairs = []
    for p in params:
        if p.kind == "loguniform":
            pairs.append((p.key, trial.suggest_float(p.name, p.low, p.high, log=True)))
        elif p.kind == "uniform":
            pairs.append((p.key, trial.suggest_float(p.name, p.low, p.high)))
        elif p.kind == "int":
            pairs.append((p.key, trial.suggest_int(p.name, p.low, p.high)))
        elif p.kind == "choice":
            scalar = all(v is None or isinstance(v, (bool, int, float, str)) for v in p.choices)
            if scalar:
                pairs.append((p.key, trial.suggest_categorical(p.name, p.choices)))
            else:
                texts = [_text(v) for v in p.choices]
                pairs.append((p.key, p.choices[texts.index(trial.suggest_categorical(p.name, texts))]))
        elif p.kind == "fixed":
            pairs.append((p.key, p.choices[0]))
        else:  # a class (fixed_class: the only one), then its arguments
            cls = trial.suggest_categorical(p.name, list(p.branches)) if p.kind == "class" else next(iter(p.branches))
            pairs.append((p.key, cls))
            pairs += suggest(trial, p.branches[cls])
    return pairs


def validation_sets(params: list[Param]) -> list[list[tuple[str, object]]]:
    """Few command lines that together set every value worth checking once: line i takes each option's i-th
    example (cycling), so their number is the largest number of examples of one option."""
    examples = [p.examples() for p in params]
    return [[pair for e in examples for pair in e[i % len(e)]] for i in range(max(len(e) for e in examples))]


def keys(params: list[Param]) -> set[str]:
    """Every option the space sets (a class's arguments too)."""
    found = set()
    for p in params:
        found.add(p.key)
        for args in p.branches.values():
            found |= keys(args)
    return found
