"""The command line as a student meets it: `--help` shows the homework's real defaults, a class named
on the command line starts from its own defaults, and a mistake is one line with a suggestion."""

import difflib
import inspect
import re
from pathlib import Path

import yaml
from jsonargparse import Namespace
from jsonargparse.typing import import_object

from adapters import help_parts, hide_subcommand_list, option_strings
from datamodules.errors import DataError
from homework.command_line import CONFIG_DIR, option, take  # noqa: F401 (this module's names before they moved)

SECTIONS = ("trainer", "model", "data", "early_stopping", "checkpoint", "submission")


#: A sentence of Lightning's docstrings that states its own default (``Default: ``True``.``, ``defaults to
#: ``max_epochs = 1000``.``, ``Disabled by default (None).``): the help's "(default: ...)" says the homework's,
#: which is what runs. Only such sentences: "a non-default number of validation runs" or "whether to enable the
#: progress bar by default" say something else, and stay.
LIGHTNING_DEFAULT = re.compile(r"(?i)^default:|\bdefaults? to\b|^\W*by default\b|\bby default \(|``\s*by default\b"
                               r"|\(default(: [^)]*)?\)")


def tidy_help(parser, trainer_class: type, summaries: dict[str, str], usage: str) -> None:
    """`--help` as the one truth: one list of commands (the description's table and `usage`), each command's own
    options group titled with what it does (not Lightning's first docstring line cut mid-sentence), and no
    sentence of Lightning's stating a default that the homework's recipe overrides."""
    hide_subcommand_list(parser, "one of the commands listed at the top")
    parser.usage = usage  # (after the subcommands' usage lines were made from the root's)
    for command, _, item in help_parts(parser):
        title = getattr(item, "title", None)
        doc = " ".join((inspect.getdoc(getattr(trainer_class, command or "", None)) or "").split())
        if command and title and doc and doc.startswith(" ".join(title.split())):
            item.title = f"{command}: {summaries[command]}"
        text = getattr(item, "help", None)
        if isinstance(text, str):
            sentences = re.split(r"(?<=\.)\s+", " ".join(text.split()))
            kept = [s for s in sentences if not LIGHTNING_DEFAULT.search(s)]
            if len(kept) < len(sentences):
                item.help = " ".join(kept)


def config_defaults(path: Path) -> dict:
    """The homework's YAML as parser defaults (`{"model.hidden_dims": [64, 32], ...}`): then `--help`
    and `--print_config` show what really runs, and a user's `--config` file overrides it key by key."""
    config = yaml.safe_load(path.read_text()) or {}
    flat = {}
    for key, value in config.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def _class_switches(args: list[str]) -> dict[str, tuple[int, set[str]]]:
    """`--key CLASS`, `--key=CLASS` or `--key '{"class_path": ...}'` on the command line: for each key, the
    position of the last such switch and the init args it names itself."""
    switches: dict[str, tuple[int, set[str]]] = {}
    for i, token in enumerate(args):
        if not token.startswith("--"):
            continue
        key, sep, value = token[2:].partition("=")
        if not sep:
            value = args[i + 1] if i + 1 < len(args) else ""
        value = value.strip()
        if value.startswith("{"):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            if isinstance(parsed, dict) and "class_path" in parsed:
                switches[key] = (i, set((parsed.get("init_args") or {}).keys()))
        elif re.fullmatch(r"[A-Za-z_][\w.]*", value) and "." in key and value.lower() not in ("true", "false", "null"):
            switches[key] = (i, set())
    return switches


def reset_switched_classes(config: Namespace, args: list[str], defaults: dict) -> list[str]:
    """A class named on the command line that differs from the homework's default starts from its own
    defaults: `--model.optimizer torch.optim.SGD` must not inherit AdamW's `weight_decay: 0.01`
    (jsonargparse keeps every init arg the new class also accepts). Returns the keys reset."""
    reset = []
    for key, (position, named) in _class_switches(args).items():
        value = config.get(key)
        if not isinstance(value, Namespace) or "class_path" not in value or value.get("init_args") is None:
            continue
        default = defaults.get(key)
        if isinstance(default, dict) and default.get("class_path") == value.class_path:
            continue
        prefix = f"--{key}."
        named = named | {t[len(prefix):].partition("=")[0].removeprefix("init_args.")
                         for t in args[position + 1:] if t.startswith(prefix)}
        try:
            parameters = inspect.signature(import_object(value.class_path)).parameters
        except (ImportError, ValueError, TypeError):
            continue
        init_args = value.init_args
        for name in list(vars(init_args)):
            parameter = parameters.get(name)
            if name not in named and parameter is not None and parameter.default is not inspect.Parameter.empty:
                init_args[name] = parameter.default
        reset.append(key)
    return reset


def one_line(message: str, parser, config_files: list[str] = ()) -> str:
    """jsonargparse's error as one line: an unknown option (or a key of a `--config` file) with the closest valid
    one."""
    message = " ".join(message.split())
    unknown = re.search(r"unrecognized arguments: (\S+)", message, re.IGNORECASE)
    if unknown:
        bad = unknown.group(1).partition("=")[0]
        # (--resume is read before parsing: runs.resume_args)
        close = difflib.get_close_matches(bad, option_strings(parser) + ["--resume"], n=1, cutoff=0.6)
        return f"unrecognized option {bad}" + (f"; did you mean {close[0]}?" if close else "; see --help")
    missing = re.search(r'[Pp]arser key "config": File does not exist: \'([^\']+)\'', message)
    if missing:
        return f"--config {missing.group(1)}: no such file"
    if message.startswith("Problems parsing config"):  # YAML that does not parse
        where = ", ".join(config_files) or "the config"
        problem = re.sub(r' in "<unicode string>",', " at", message.partition(":")[2].strip())
        return f"--config {where}: not valid YAML ({problem})"
    if message.startswith("Unexpected config"):  # empty, or YAML that is not a mapping of options
        where = ", ".join(config_files) or "the config"
        what = "an empty file" if not message.partition(":")[2].strip() else "not a mapping of options"
        return f"--config {where}: {what} (a config maps options to values, as `--print_config` writes one)"
    key = re.search(r"does not accept option '(\S+)'", message)
    if key:  # a key in a --config file
        close = difflib.get_close_matches("--" + key.group(1), option_strings(parser), n=1, cutoff=0.6)
        where = f" in --config {', '.join(config_files)}" if config_files else ""
        return (f"unknown key '{key.group(1)}'{where}" +
                (f"; did you mean '{close[0][2:]}'?" if close else "; see --help for the keys"))
    return _type_error(message) or (message[0].lower() + message[1:] if message else "invalid arguments; see --help")


def _type_error(message: str) -> str | None:
    """jsonargparse's nested type-check report, shortened to what was given for which option and what it takes."""
    keys = re.findall(r'[Pp]arser key "([^"]+)"', message)
    if not keys:
        return None
    key = ".".join(keys[:1] + [k for k in keys[1:] if not keys[0].endswith(k)])
    missing = re.search(r"(module '[\w.]+' has no attribute '\w+')", message)
    if missing:
        return f"--{key}: no such class ({missing.group(1)})"
    given = re.search(r"Given value: (.*?)(?:\. Got value:|$)", message) or re.search(r"Got value: (.*)$", message)
    expected = [{"NoneType": "null"}.get(t, t) for t in re.findall(r"Expected a <class '(?:[\w.]+\.)?(\w+)'>", message)]
    expected = [f"a valid {' or '.join(dict.fromkeys(expected))}"] if expected else []
    literals = re.findall(r"Expected a typing\.Literal\[(.*?)\]", message)
    expected += [f"one of {c.replace(chr(39), '')}" for c in literals]
    if given and expected:
        return f"--{key}: {given.group(1)!r} is not {' or '.join(expected)}"
    return None


def check_schedule_length(config: Namespace) -> None:
    """`fit --trainer.max_epochs -1` (Lightning's "no limit") under a schedule spread over the whole fit (one with
    `set_total_steps`, as every recipe's warmup + cosine) has no length to spread over: one line, before anything
    is made. (A finder runs its own steps: not checked then.)"""
    trainer, scheduler = config.trainer, getattr(config.model, "lr_scheduler", None)
    if trainer.get("max_epochs") != -1 or trainer.get("max_steps") not in (None, -1) or not scheduler:
        return
    if getattr(config, "find_lr", False) or getattr(config, "find_batch_size", False):
        return
    path = scheduler.get("class_path") if hasattr(scheduler, "get") else None
    if path and hasattr(import_object(path), "set_total_steps"):
        raise DataError(f"--trainer.max_epochs -1 trains without end, but {path.rpartition('.')[2]} spreads its "
                        f"schedule over the whole fit: give --trainer.max_epochs N or --trainer.max_steps N (or "
                        f"--model.lr_scheduler null, a constant learning rate)")


def check_training_length(trainer: Namespace) -> None:
    """`fit --trainer.max_epochs 0` (or max_steps 0) trains nothing, and would leave a "finished" run without a
    checkpoint: a user mistake, refused before anything is made. -1 means no limit, as in Lightning."""
    for key in ("max_epochs", "max_steps"):
        value = trainer.get(key)
        if value is None or value == -1 or value >= 1:
            continue
        if value == 0:
            raise DataError(f"--trainer.{key} 0 trains nothing; give at least 1")
        raise DataError(f"--trainer.{key} {value}: give at least 1 (or -1 for no limit)")
