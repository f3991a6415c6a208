"""The documentation's commands parse and its links resolve (README.md and docs/*.md).

Every `python homework/hwN.py ...` command (also after `srun` or `torchrun ...`) in a fenced code block,
and every inline code span that is such a command, is run in-process through that homework's `main(args)`
with `--print_config` appended: LightningCLI parses and type-checks the whole command line, applies the
`--config` files, resolves `--ckpt_path best|last|<file>|<cross-validation dir>` and `--resume`, prints
the resolved config and exits 0, all before any data is read or anything is built or trained. Commands
that already ask for `--help` get no `--print_config` (help exits first). `compare` also gets
`--print_config`: it validates its own options (variant names, `--lr`, the epoch budget) and then parses
the first variant's full `fit` command line, which checks more than its `--help` (a fixed text) would.

`--ckpt_path best|last` and `--resume` need a trained run, so each command runs next to a fixture run:
a run directory in the layout `fit` writes (`run.json` from `runs.RunRecord`, `config.yaml` from the
homework's own `fit --print_config`, a best and a `last.ckpt`). Its checkpoints hold only what the CLI
reads before `--print_config` exits (Lightning's keys and the homework that trained it), no weights:
nothing here loads weights. A run path the docs name (`runs/hw4/2026-11-24_10-31-02_fit`) is created as
such a run, a name ending in `_cvK` as a cross-validation directory of fold runs, and a study's
`runs/hwN/tune_NAME/best_config.yaml` as the homework's resolved fit config.

Building LightningCLI's parsers (five subcommands, every class signature) is most of a command's time (~2 s on
the shared 2-core machine, against ~0.3 s for the parse), so each homework's parsers are built once by the
real code and every command gets a deep copy of them (`cached_parsers`): the parse itself is the real one,
on a parser no earlier command has used. (Checked when this was written: all the docs' commands printed the
same config with and without the cache, byte for byte but for the time stamps in new run directories' names.)

Placeholders are replaced by concrete values rather than skipped: `DIR` by a folder name, `N`/`K` by 3.
Any other `<...>` in a command fails the test: write a concrete example instead.
"""
import contextlib
import copy
import io
import re
import shlex
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from datamodules.base import HomeworkDataModule
from homework import registry, runs
from homework.cli.main import HomeworkCLI
from models.base import BaseTask

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDERS = {"DIR": "elsewhere", "N": "3", "K": "3"}
RUN = "2026-11-24_10-31-02_fit"  # the fixture run's name (the docs' example run)
COMMAND = re.compile(r"^(?:srun\s+)?python\s+homework/(hw\d+)\.py\b(.*)$")
TORCHRUN = re.compile(r"^torchrun\s.*?\shomework/(hw\d+)\.py\b(.*)$")
RUN_PATH = re.compile(r"^runs/(hw\d+)/[\w.-]+$")
BEST_CONFIG = re.compile(r"^runs/(hw\d+)/tune_[\w.-]+/best_config\.yaml$")  # what a `tune` study writes
FENCE = re.compile(r"^\s*(```|~~~)")


def split_markdown(text: str) -> tuple[list[tuple[int, str]], str]:
    """(the lines inside fenced code blocks with their line numbers, the text with those lines blanked)."""
    fenced, prose, inside = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            prose.append("")
        elif inside:
            fenced.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    return fenced, "\n".join(prose)


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) for every homework command in the docs' code blocks and inline code spans."""
    found = []
    for doc in DOCS:
        name = doc.relative_to(ROOT).as_posix()
        fenced, prose = split_markdown(doc.read_text(encoding="utf-8"))
        pending, start = "", None
        for number, line in fenced:  # join `\` continuations
            pending, start = pending + line.rstrip().removesuffix("\\") + " ", start or number
            if not line.rstrip().endswith("\\"):
                command = " ".join(pending.split())
                if COMMAND.match(command) or TORCHRUN.match(command):
                    found.append((f"{name}:{start}", command))
                pending, start = "", None
        for match in re.finditer(r"`([^`]+)`", prose):
            command = " ".join(match.group(1).split())
            if COMMAND.match(command):
                found.append((f"{name}:{prose.count(chr(10), 0, match.start()) + 1}", command))
    return found


COMMANDS = doc_commands()


def unique_commands() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(where it first appears and how often, the command, homework, its arguments), once per distinct
    command line: the same command in the README and in a homework's page is parsed once."""
    found: dict[tuple[str, tuple[str, ...]], list] = {}
    for where, command in COMMANDS:
        homework, rest = (COMMAND.match(command) or TORCHRUN.match(command)).groups()
        key = (homework, tuple(shlex.split(rest, comments=True)))
        found.setdefault(key, [where, command, 0])[2] += 1
    return [(where + (f" (+{n - 1} more)" if n > 1 else ""), command, homework, args)
            for (homework, args), (where, command, n) in found.items()]


UNIQUE = unique_commands()


def homework_classes(homework: str) -> tuple[object, type[BaseTask], type[HomeworkDataModule]]:
    """(main, the model class, the DataModule class) of `homework/hwN.py`."""
    assert homework in registry.names(), f"the docs name {homework}, which homework/ does not have"
    module = registry.module(homework)
    return module.main, module.HOMEWORK.model_class, module.HOMEWORK.datamodule_class


_configs: dict[str, str] = {}


def fit_config(homework: str) -> str:
    """The homework's resolved `fit` config, as a run's config.yaml holds it."""
    if homework not in _configs:
        main = homework_classes(homework)[0]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main(["fit", "--print_config"])
        _configs[homework] = out.getvalue()
    return _configs[homework]


def fake_run(run_dir: Path, homework: str, fold: int | None = None) -> None:
    """A run directory as `fit` leaves it after a few epochs (see the module docstring), with status
    `interrupted` so that `fit --resume` takes it."""
    _, model, data = homework_classes(homework)
    config = fit_config(homework)
    split = data.split_settings({**yaml.safe_load(config)["data"], **({} if fold is None else {"fold": fold})})
    record = runs.RunRecord(run_dir, homework, Path(f"data/{homework}-demo"), True, split).record
    best = f"checkpoints/best-epoch=003-{model.monitor}=0.5000.ckpt"
    record.update(status="interrupted", seed=1, monitor=model.monitor, mode=model.mode, best_score=0.5,
                  best_epoch=3, best_checkpoint=best, epochs=5)
    (run_dir / "checkpoints").mkdir(parents=True)
    checkpoint = {"state_dict": {}, "pytorch-lightning_version": pl.__version__, "homework": homework}
    for path in (best, "checkpoints/last.ckpt"):
        torch.save(checkpoint, run_dir / path)
    (run_dir / "config.yaml").write_text(config)
    runs.write_json(record, run_dir / runs.RECORD)


def fake_cross_validation(cv_dir: Path, homework: str, folds: int) -> None:
    """A cross-validation directory of `fit --data.num_folds K --data.fold all` with two finished folds."""
    for fold in range(2):
        fake_run(cv_dir / f"{RUN}_fold{fold}of{folds}", homework, fold)


def concrete(tokens: list[str]) -> list[str]:
    """The command line with placeholders and repository paths made concrete (see the module docstring)."""
    args = []
    for token in tokens:
        token = PLACEHOLDERS.get(token, token)
        if token.startswith("homework/"):  # a config file of the repository; the test runs in a temp dir
            token = str(ROOT / token)
        args.append(token)
    return args


_parsers: dict[tuple[type, type], tuple] = {}


@pytest.fixture
def cached_parsers(monkeypatch):
    """HomeworkCLI builds its parsers once per homework; each command parses with a fresh deep copy."""
    build = HomeworkCLI.setup_parser

    def setup_parser(cli, add_subcommands, main_kwargs, subparser_kwargs):
        key = (cli.model_class, cli.datamodule_class)
        if key not in _parsers:
            build(cli, add_subcommands, main_kwargs, subparser_kwargs)
            _parsers[key] = (cli.parser, cli._subcommand_parsers, cli._subcommand_method_arguments)
        # one deepcopy of the three, so that the subcommand parsers stay those inside the main parser
        cli.parser, cli._subcommand_parsers, cli._subcommand_method_arguments = copy.deepcopy(_parsers[key])

    monkeypatch.setattr(HomeworkCLI, "setup_parser", setup_parser)


@pytest.mark.usefixtures("cached_parsers")
@pytest.mark.parametrize(("where", "command", "homework", "tokens"), UNIQUE, ids=[u[0] for u in UNIQUE])
def test_documented_command_parses(where, command, homework, tokens, capsys):
    placeholder = re.search(r"<[^<>]*>", command)
    assert not placeholder, f"{where}: `{command}` has a placeholder, {placeholder.group()}: give an example"
    main = homework_classes(homework)[0]
    args = concrete(list(tokens))
    fake_run(Path("runs") / homework / RUN, homework)
    for token in args:
        study = BEST_CONFIG.match(token)
        if study and not Path(token).exists():  # a study's best trial's config: a complete fit config
            Path(token).parent.mkdir(parents=True, exist_ok=True)
            Path(token).write_text(fit_config(study.group(1)))
        named = RUN_PATH.match(token)
        if named and not Path(token).exists():
            cv = re.search(r"_cv(\d+)$", token)
            if cv:
                fake_cross_validation(Path(token), named.group(1), int(cv.group(1)))
            else:
                fake_run(Path(token), named.group(1))
    helping = "--help" in args or "-h" in args
    if not helping and "--print_config" not in args:
        args.append("--print_config")
    with pytest.raises(SystemExit) as exit_info:  # no SystemExit: it ran for real instead of parsing
        main(args)
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1:] or ["(nothing on stderr)"]
    assert exit_info.value.code in (0, None), f"{where}: `{command}` exited {exit_info.value.code}: {last[0]}"
    assert out.strip(), f"{where}: `{command}` printed no {'help' if helping else 'config'}"


def test_the_docs_have_commands_in_every_page_that_shows_one():
    """The collector finds the commands (a broken regex would make the test above pass vacuously)."""
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert {"README.md", "docs/hw1.md", "docs/hw5.md", "docs/lab.md", "docs/multi-gpu.md"} <= where
    launchers = {c.split()[0] for _, c in COMMANDS}
    assert {"python", "torchrun", "srun"} <= launchers


def test_the_readme_table_has_a_row_for_every_homework_with_its_page():
    """The README's table of homeworks names each homework the registry finds, linking its own page."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| \[`(hw\d+)\.py`\]\(docs/(hw\d+)\.md\) \|", readme, re.MULTILINE)
    assert [script for script, _ in rows] == registry.names()
    assert all(script == page and (ROOT / "docs" / f"{page}.md").is_file() for script, page in rows)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    found, seen = set(), {}
    for line in split_markdown(doc.read_text(encoding="utf-8"))[1].splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


def test_relative_links_point_to_existing_files_and_headings():
    broken = []
    for doc in DOCS:
        prose = split_markdown(doc.read_text(encoding="utf-8"))[1]
        prose = re.sub(r"`[^`]*`", "", prose)  # code spans are not links
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading in {file.name})")
    assert not broken, "\n".join(broken)


def test_documented_scripts_exist_and_figures_say_what_made_them():
    problems = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for script in re.findall(r"python\s+((?:benchmarks|homework)/[\w/]+\.py)", text):
            if "hwN" not in script and not (ROOT / script).is_file():  # hwN: any homework, in prose
                problems.append(f"{doc.relative_to(ROOT)}: {script} does not exist")
        lines = text.splitlines()
        for number, line in enumerate(lines):
            if re.search(r"!\[[^\]]*\]\(", line):  # a figure: the command that drew it must be next to it
                near = "\n".join(lines[max(0, number - 6):number + 6])
                if not re.search(r"`python (homework|benchmarks)/", near):
                    where = f"{doc.relative_to(ROOT)}:{number + 1}"
                    problems.append(f"{where}: a figure without the command that drew it")
    assert not problems, "\n".join(problems)
