"""The package's import rule (CONTRIBUTING.md, "Layers"), read from the source with `ast` (imports inside
functions too): imports run downward only, no two files import each other (directly or through others), no
file is over 300 lines, and no module of ours is loaded by name (`importlib`) to slip past the rule: the
model registry imports its models plainly."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers.shared import REPO

PACKAGE = REPO / "magnet_jax"
MAX_LINES = 300
# Top to bottom: a file may import its own layer's files and those of the layers below it. A layer is a
# subpackage (`training`) or a top-level module (`config`). The last layer is the foundation.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("commands", "convert"),
    ("training",),
    ("evaluation",),
    ("inference",),
    ("rasters",),
    ("visualization",),
    ("weights",),
    ("models",),
    ("data",),
    ("ops", "metrics", "losses", "config", "preprocess", "sharding", "allocator", "compile_cache", "memory_budget",
     "field_checks", "progress", "provenance"),
)  # fmt: skip
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
_LOADERS = {"import_module", "__import__"}
_OUR_NAME = re.compile(r"^magnet_jax(\.\w+)*$")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """'training' for magnet_jax.training.loop, 'config' for magnet_jax.config, '' for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _loads_by_name(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in _LOADERS:
                calls.append(node)
    return calls


def _our_strings(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and _OUR_NAME.match(n.value)}  # fmt: skip


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, dict[str, int]], list[str]]:
    """({module: {imported module of ours: line}}, by-name loads of our modules).

    `from magnet_jax.x import y` counts as importing magnet_jax.x.y when that is a module, else magnet_jax.x.
    A module's names that a file loading modules by name holds as strings count as its imports."""
    files = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    dodges: list[str] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        out: dict[str, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                pkg = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                    else node.module or ""  # fmt: skip
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in files else pkg for a in node.names]
            else:
                continue
            for t in targets:
                if t in files:
                    out.setdefault(t, node.lineno)
        if calls := _loads_by_name(tree):
            for name in sorted(_our_strings(tree)):  # every module of ours is imported by a plain import
                out.setdefault(name, calls[0].lineno)
                dodges.append(f"{path.relative_to(package.parent)}:{calls[0].lineno} loads {name} by name")
            for call in calls:
                if any(isinstance(a, ast.JoinedStr | ast.BinOp) for a in call.args):
                    dodges.append(f"{path.relative_to(package.parent)}:{call.lineno} loads a computed module name")
        out.pop(mod, None)
        # a file importing its own package's __init__ (names re-exported there) is no edge between layers
        graph[mod] = {t: ln for t, ln in out.items() if not (mod.startswith(t + ".") and t != mod.split(".")[0]
                                                             and files[t].name == "__init__.py")}  # fmt: skip
    return graph, dodges


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Groups of more than one file that import each other (strongly connected components, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while comp[-1:] != [v]:
                comp.append(stack.pop())
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for mod, targets in graph.items():
        for target, line in targets.items():
            a, b = layer_of(mod), layer_of(target)
            if a and b and RANK[a] > RANK[b]:
                bad.append(f"{mod}:{line} imports {target} ({a} sits below {b})")
    return bad


def long_files(package: Path = PACKAGE) -> dict[str, int]:
    """{file: lines} of the files over MAX_LINES lines."""
    return {str(p.relative_to(package.parent)): n for p in sorted(package.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}  # fmt: skip


@pytest.fixture(scope="module")
def graph_and_dodges():
    return import_graph()


def test_every_layer_is_in_the_map_and_in_contributing(graph_and_dodges):
    graph, _ = graph_and_dodges
    unplaced = sorted({layer_of(m) for m in graph} - set(RANK) - {""})
    assert not unplaced, f"add to LAYERS here and to CONTRIBUTING.md's layer map: {unplaced}"
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = text[text.index("## Layers") : text.index("## Adding things")]
    missing = [u for u in RANK if (PACKAGE / u).exists() or (PACKAGE / f"{u}.py").exists()]
    missing = [u for u in missing if f"{u}/" not in section and f"{u}.py" not in section and f" {u}," not in section]
    assert not missing, f"CONTRIBUTING.md's layer map does not name {missing}"


def test_imports_run_downward_only(graph_and_dodges):
    graph, _ = graph_and_dodges
    assert upward_imports(graph) == []


def test_no_import_cycle_between_files(graph_and_dodges):
    graph, _ = graph_and_dodges
    assert cycles(graph) == []


def test_no_file_over_300_lines():
    assert long_files() == {}


def test_no_module_of_ours_is_loaded_by_name(graph_and_dodges):
    _, dodges = graph_and_dodges
    assert dodges == []


def test_the_rule_catches_what_it_forbids(tmp_path):
    """A planted package with an upward import, a cycle, a long file and a by-name load of another layer."""
    pkg = tmp_path / "magnet_jax"
    for sub in ("models", "training", "ops", "weights"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("def f():\n    from magnet_jax.training import loop\n")  # in a function
    (pkg / "training" / "loop.py").write_text("from magnet_jax.models import a\n")
    (pkg / "ops" / "x.py").write_text("from . import y\n" + "\n" * MAX_LINES)
    (pkg / "ops" / "y.py").write_text("from magnet_jax.ops import x\n")
    (pkg / "weights" / "reg.py").write_text("import importlib\nM = importlib.import_module('magnet_jax.training')\n")
    (pkg / "models" / "__init__.py").write_text("import importlib\nR = {'a': 'magnet_jax.models.a'}\n"
                                                "def get(n):\n    return importlib.import_module(R[n])\n")  # fmt: skip
    graph, dodges = import_graph(pkg)
    assert upward_imports(graph) == [
        "magnet_jax.models.a:2 imports magnet_jax.training.loop (models sits below training)",
        "magnet_jax.weights.reg:2 imports magnet_jax.training (weights sits below training)",
    ]
    assert cycles(graph) == [["magnet_jax.models.a", "magnet_jax.training.loop"],
                             ["magnet_jax.ops.x", "magnet_jax.ops.y"]]  # fmt: skip
    assert dodges == ["magnet_jax/models/__init__.py:4 loads magnet_jax.models.a by name",
                      "magnet_jax/weights/reg.py:2 loads magnet_jax.training by name"]  # fmt: skip
    assert graph["magnet_jax.models"] == {"magnet_jax.models.a": 4}
    assert long_files(pkg) == {"magnet_jax/ops/x.py": MAX_LINES + 1}
