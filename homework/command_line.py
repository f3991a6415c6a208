"""The command line as words, read before any parser and written for the user to paste: an option's value
(`option`, `take`) and the one builder of every `Next:` line (`command`). The bottom of homework/: `runs`, `lab`
and `cli` all use it (tests/test_layers.py)."""
import shlex
import sys
from contextvars import ContextVar
from pathlib import Path

from datamodules.errors import DataError
from homework.registry import CONFIGS

CONFIG_DIR = CONFIGS  # homework/configs: each homework's recipes
#: The options the root parser takes before the command (`-c FILE` and `--config FILE` take a value).
ROOT_OPTIONS_WITH_VALUE = ("-c", "--config")


def option(args: list[str], name: str) -> tuple[int, str] | None:
    """(position, value) of the last `--name value` / `--name=value` in `args` (before parsing: k-fold, compare
    and --resume rewrite the command line), None when absent."""
    found = None
    for i, token in enumerate(args):
        if token == name and i + 1 < len(args):
            found = (i, args[i + 1])
        elif token.startswith(name + "="):
            found = (i, token.partition("=")[2])
    return found


def take(args: list[str], name: str) -> tuple[list[str], str | None]:
    """`args` without the last `--name value` / `--name=value`, and its value (None when absent): a command of
    several runs reading one of its own options before the rest go to every fit. Each of those options takes a
    value: given bare (last, or before another option), it is a DataError, not left for the parser to call
    unknown."""
    for i, token in enumerate(args):
        if token == name and (i + 1 == len(args) or args[i + 1].startswith("--")):
            raise DataError(f"{name} needs a value")
    found = option(args, name)
    if found is None:
        return args, None
    i = found[0]
    drop = {i} if args[i].startswith(name + "=") else {i, i + 1}
    return [a for k, a in enumerate(args) if k not in drop], found[1]


#: set while the Python API runs a command (homework/cli/api.py): the next command is shown as the API's call
FROM_PYTHON = ContextVar("FROM_PYTHON", default=False)


def command(homework: str, *args: object) -> str:
    """A command line the user can paste where they are: how they started this one (`python
    ~/proj/homework/hw1.py`, `python -m homework.hw1`), or, from Python (the tests), the form
    that works from any folder; from the Python API (a notebook), the API's call. The one builder of every `Next:`
    line."""
    if FROM_PYTHON.get():
        return python_call(homework, *args)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if spec is not None and spec.name == f"homework.{homework}":
        start = ["python", "-m", f"homework.{homework}"]
    elif spec is None and script is not None and script.name == f"{homework}.py" and script.is_file():
        start = ["python", str(script)]
    elif (Path("homework") / f"{homework}.py").is_file():  # in the project folder: the README's form
        start = ["python", f"homework/{homework}.py"]
    else:
        start = ["python", "-m", f"homework.{homework}"]
    return shlex.join(start + [str(a) for a in args])


def python_call(homework: str, name: object, *args: object) -> str:
    """`hw1 fit --resume RUN --data.batch_size 64` as the API's call: `hw1.fit(resume='RUN', data__batch_size=64)`."""
    words, keywords, i = [str(a) for a in args], [], 0
    while i < len(words):
        option = words[i].removeprefix("--")
        value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else None
        i += 1 if value is None else 2
        if value is None:
            keywords.append(f"{option.replace('.', '__')}=True")
            continue
        try:
            shown = repr(int(value))
        except ValueError:
            try:
                shown = repr(float(value))
            except ValueError:
                shown = {"true": "True", "false": "False", "null": "None"}.get(value, repr(value))
        keywords.append(f"{option.replace('.', '__')}={shown}")
    return f"{homework}.{name}({', '.join(keywords)})"


def command_word(args: list[str]) -> str | None:
    """The command: the first word on the line that is neither an option nor a root option's value."""
    words = iter(args)
    for arg in words:
        if arg in ROOT_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not arg.startswith("-"):
            return arg
    return None
