"""The project's dependencies point one way (docs/architecture.md):

    homework/hwN.py  ->  homework/cli  ->  homework/lab  ->  homework/runs  ->  homework/command_line.py,
        registry.py  ->  models, callbacks  ->  datamodules  ->  datamodules/errors.py, adapters/ (other
        libraries' private APIs)

A module imports only from its own layer or below, never upward, and no set of modules imports each other in a
cycle. Every import counts, also one inside a function: a lazy import is no way around a layer.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("homework", "models", "callbacks", "datamodules", "adapters")


#: homework/'s own layers, bottom to top (the package's `__init__` and the words of a command line at the bottom)
HOMEWORK_LAYERS = (("homework", "homework.command_line", "homework.registry"), ("homework.runs",), ("homework.lab",),
                   ("homework.cli",))


def layer(module: str) -> int:
    """0 the leaves, 1 data, 2 models and callbacks, 3-6 homework/'s command line words, runs, lab and cli, 7 the
    entry points."""
    parts = module.split(".")
    if module in ("datamodules.errors", "adapters"):  # leaves: import nothing of the project
        return 0
    if parts[0] == "datamodules":
        return 1
    if parts[0] in ("models", "callbacks"):
        return 2
    if parts[0] == "homework" and len(parts) == 2 and parts[1].startswith("hw") and parts[1][2:].isdigit():
        return 7
    return 3 + next(i for i, names in reversed(list(enumerate(HOMEWORK_LAYERS)))
                    if any(module == n or module.startswith(n + ".") for n in names))


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (absolute or relative, at any depth of the file)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:  # `from pkg import name`: the module, or the package
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports(path, name, set(project_modules())) for name, path in project_modules().items()}


def test_the_leaves_import_nothing_of_the_project():
    assert GRAPH["datamodules.errors"] == set() and GRAPH["adapters"] == set()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_upward(module):
    upward = sorted(target for target in GRAPH[module] if layer(target) > layer(module)
                    and not module.endswith("__init__") and target != module.rpartition(".")[0])
    assert not upward, f"{module} (layer {layer(module)}) imports {upward} from a higher layer"


def test_no_import_cycles():
    """Tarjan's strongly connected components: any component of more than one module is a cycle. A package's
    `__init__` re-exporting its own modules is not one (they do not import the package back)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_test_sees_a_planted_upward_import(tmp_path):
    """The checker itself: an upward import in a datamodule is found (so a passing run means something)."""
    planted = tmp_path / "x.py"
    planted.write_text("def f():\n    from homework import runs\n")
    assert "homework.runs" in imports(planted, "datamodules.x", set(project_modules()))


def test_a_config_saved_before_the_layout_changed_still_loads(tmp_path, default_logger):
    """A run's config.yaml from before cli/, runs/ and lab/ names `homework.tracking.WandbLogger`: `fit --config`
    it (or `--resume` the run) still trains, tracked by the project's W&B logger (offline: no login)."""
    from homework.hw1 import main
    from homework.runs.tracking import WandbLogger
    from tests.conftest import QUIET

    old = tmp_path / "old.yaml"
    old.write_text("trainer:\n  max_epochs: 1\n  logger:\n    class_path: homework.tracking.WandbLogger\n"
                   "    init_args:\n      project: ntu-ml-hw1\n")
    cli = main(["fit", "--config", str(old), *QUIET])
    assert isinstance(cli.trainer.logger, WandbLogger)
    assert list(cli.run_dir.glob("wandb/offline-run-*"))


def test_importing_the_errors_leaf_loads_nothing_heavy():
    """`datamodules.errors` is imported by every layer (and by the Python API before anything runs): importing it
    must not load torch through the package's `__init__` (it once took ~10 s)."""
    import subprocess
    import sys

    code = "import sys, datamodules.errors; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('torch', 'numpy', 'pytorch_lightning', 'datamodules')))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "['datamodules', 'datamodules.errors']"
