"""The package's design, checked: layered packages, no import circles, Lightning in one place, small modules
and functions, no private attribute reached across modules.

Layers, lowest first (a package may import its own modules and any package of a lower layer, never one of its
own layer or above):

    0 core        runtime, files, metrics, figures: no other upconv import
    1 nets, data  networks (Encoder, zoo, built-in nets, decoders, checkpoints) and plain-torch data
    2 optim       the input-optimisation engine
    3 methods     inversion methods behind one Method base and registry
    4 training, evaluation, visualize
    5 privacy, benchmark
    6 cli
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "upconv")
LAYERS = {
    "core": 0,
    "nets": 1,
    "data": 1,
    "optim": 2,
    "methods": 3,
    "training": 4,
    "evaluation": 4,
    "visualize": 4,
    "privacy": 5,
    "benchmark": 5,
    "cli": 6,
}
LIGHTNING_MODULES = {
    "upconv.training.module",
    "upconv.training.classifier",
    "upconv.training.datamodule",
    "upconv.training.cli",
    "upconv.training.callbacks",
    "upconv.training.runs",
}
# Sizes are counted in statements (every statement at any depth; docstrings and imports not counted), not in
# lines: the formatter's line breaks (one parameter per line, a wrapped call) are not code. 220 statements are
# about 450 formatted lines, room for the health guard with the state it keeps (the largest idea); 40 statements,
# one function read at a glance.
MAX_MODULE_STATEMENTS = 220
MAX_FUNCTION_STATEMENTS = 40
MAX_PARAMS = 10
# Signatures that ARE a configuration: jsonargparse builds a subcommand's options (positionals included) from
# a command function's signature, and LightningCLI a run's model/data options from these classes' __init__.
# Their parameters are the command line itself, declared once; everything they call stays within the limits.
CONFIG_SIGNATURES = {
    "upconv.training.module.__init__",
    "upconv.training.datamodule.__init__",
    "upconv.training.classifier.__init__",
}
COMMAND_MODULES = ("upconv.cli.",)


def _modules() -> dict[str, str]:
    """Dotted module name -> file path, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(open(path).read()) for name, path in MODULES.items()}


def _public_names() -> dict[str, str]:
    """``upconv``'s public name -> the module that defines it (the root's lazy ``_PUBLIC`` table, read from its
    source so the test imports nothing): ``from upconv import X`` is an import of that module."""
    for node in TREES["upconv"].body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_PUBLIC" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("upconv/__init__.py has no _PUBLIC table")


PUBLIC = _public_names()


def _absolute(name: str, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <module> import ...``, relative imports (``from . import x``) resolved."""
    if not node.level:
        return node.module or ""
    package = name if MODULES[name].endswith("__init__.py") else name.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _imports(name: str) -> set[str]:
    """upconv modules that ``name`` imports, at any depth of its code (lazy imports count), relative imports
    resolved and ``from upconv import X`` counted as an import of the module that defines X."""
    found = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "upconv"}
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(name, node)
            if module.split(".")[0] != "upconv":
                continue
            for a in node.names:  # `from upconv.core import metrics` imports the module upconv.core.metrics
                full = f"{module}.{a.name}"
                found.add(full if full in MODULES else PUBLIC.get(a.name, module) if module == "upconv" else module)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_layer():
    loose = [m for m in MODULES if m != "upconv" and _package(m) is None]
    assert loose == [], f"modules outside the layered packages: {loose}"


def test_no_import_circles():
    assert _cycles() == []


def test_imports_only_go_down_the_layers():
    wrong = []
    for src, targets in GRAPH.items():
        a = _package(src)
        for dst in targets:
            b = _package(dst)
            if a is None or b is None or a == b:
                continue
            if LAYERS[b] >= LAYERS[a]:
                wrong.append(f"{src} (layer {LAYERS[a]}) imports {dst} (layer {LAYERS[b]})")
    assert wrong == []


def test_the_package_root_imports_nothing_at_import_time():
    """``import upconv`` stays cheap: the public names load on first use."""
    body = TREES["upconv"].body
    imported = [a.name for n in body if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module for n in body if isinstance(n, ast.ImportFrom)]
    assert set(imported) <= {"__future__", "typing"}, imported


def test_lightning_is_imported_by_the_training_package_alone():
    users = set()
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(m.split(".")[0] in ("lightning", "pytorch_lightning") for m in mods):
                users.add(name)
    assert users <= LIGHTNING_MODULES, f"Lightning imported outside training: {sorted(users - LIGHTNING_MODULES)}"
    plain = {m for m in MODULES if m.startswith(("upconv.privacy", "upconv.evaluation", "upconv.visualize"))}
    reach = set()
    todo = list(plain)
    while todo:  # privacy, evaluation and visualize never reach Lightning through an import chain either
        m = todo.pop()
        for d in GRAPH[m]:
            if d not in reach:
                reach.add(d)
                todo.append(d)
    assert not reach & LIGHTNING_MODULES, sorted(reach & LIGHTNING_MODULES)


def statements(node: ast.AST) -> int:
    """Statements below ``node`` at any depth, without docstrings and imports."""
    return sum(
        isinstance(n, ast.stmt)
        and n is not node
        and not isinstance(n, (ast.Import, ast.ImportFrom))
        and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str))
        for n in ast.walk(node)
    )


def test_statements_are_counted_not_lines():
    toy = ast.parse(
        '"""doc"""\nimport os\n\n\ndef f(\n    a,\n    b,\n):\n    """doc"""\n    if a:\n        return (\n'
        "            b\n        )\n    return a\n"
    )
    assert statements(toy) == 4  # def, if, two returns
    assert statements(toy.body[2]) == 3


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_read_on_a_screen_or_two(name):
    assert statements(TREES[name]) <= MAX_MODULE_STATEMENTS, f"{name}: {statements(TREES[name])} statements"


def _functions():
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield name, node


def test_functions_are_short_and_take_few_parameters():
    long, wide = [], []
    for module, fn in _functions():
        if statements(fn) > MAX_FUNCTION_STATEMENTS:
            long.append(f"{module}.{fn.name}: {statements(fn)} statements")
        args = fn.args
        params = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs] if a.arg not in ("self", "cls")]
        command = module.startswith(COMMAND_MODULES) and not fn.name.startswith("_")
        if len(params) > MAX_PARAMS and not command and f"{module}.{fn.name}" not in CONFIG_SIGNATURES:
            wide.append(f"{module}.{fn.name}: {len(params)} parameters")
    assert long == [] and wide == [], long + wide


def _private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines itself: functions, classes, attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _private_imports(name: str, tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every import of a private module or name: ``import a._b``, ``from a._b import c``,
    ``from a import _b`` (relative imports included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if any(map(_is_private, a.name.split(".")))]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(name, node)
            if any(map(_is_private, module.split("."))):
                found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names if _is_private(a.name)]
    return found


def test_the_import_checks_see_every_spelling():
    """The checks above read relative imports, ``from upconv import X`` and private imports, not just the
    plain absolute spellings (each line below would otherwise slip through unseen)."""
    src = (
        "from . import metrics\nfrom ..nets import zoo\nfrom upconv import Encoder\n"
        "from torch.nn.modules.utils import _pair\nfrom timm.models import _features_fx\nimport a._b.c\n"
    )
    MODULES["upconv.core.probe"] = os.path.join(ROOT, "core", "probe.py")
    TREES["upconv.core.probe"] = tree = ast.parse(src)
    try:
        assert _imports("upconv.core.probe") == {"upconv.core.metrics", "upconv.nets.zoo", "upconv.nets.encoder"}
        assert [w for _, w in _private_imports("upconv.core.probe", tree)] == [
            "torch.nn.modules.utils._pair",
            "timm.models._features_fx",
            "a._b.c",
        ]
    finally:
        del MODULES["upconv.core.probe"], TREES["upconv.core.probe"]


def test_no_private_attribute_is_reached_from_another_module():
    """``obj._name`` only for private names the module defines itself (nothing private of another module,
    of torch or of Lightning is used or overridden)."""
    found = []
    for module, tree in TREES.items():
        own = _private_names(tree)
        found += [f"{module}:{line} imports {what}" for line, what in _private_imports(module, tree)]
        for node in ast.walk(tree):
            private = isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            if private and node.attr not in own:
                found.append(f"{module}:{node.lineno} .{node.attr}")
        for node in ast.walk(tree):  # overriding another class's private method reaches into it too
            if isinstance(node, ast.ClassDef) and node.bases:
                for item in node.body:
                    if (
                        isinstance(item, ast.FunctionDef)
                        and item.name.startswith("_")
                        and not item.name.startswith("__")
                    ):
                        calls_super = any(
                            isinstance(n, ast.Attribute) and n.attr == item.name and isinstance(n.value, ast.Call)
                            for n in ast.walk(item)
                        )
                        if calls_super:
                            found.append(f"{module}.{node.name}.{item.name} overrides a private method")
    assert found == []


def test_the_design_figures_quoted_in_the_docs_are_the_graph_s():
    """The README (or a docs/ page) quotes the graph's size; those numbers are this graph's, not last month's."""
    import glob
    import re

    docs = [os.path.join(ROOT, "..", "README.md"), *glob.glob(os.path.join(ROOT, "..", "docs", "*.md"))]
    pattern = r"(\d+) modules in (\d+) packages on (\d+) layers, (\d+) import arrows, \**(\d+) import circles"
    quoted = [m.groups() for d in docs if os.path.exists(d) for m in re.finditer(pattern, open(d).read())]
    packages = {p for m in MODULES if (p := _package(m))}
    actual = tuple(
        map(
            str,
            (
                len(MODULES),
                len(packages),
                len({LAYERS[p] for p in packages}),
                sum(len(v) for v in GRAPH.values()),
                len(_cycles()),
            ),
        )
    )
    assert quoted and all(q == actual for q in quoted), f"quoted {quoted}; the graph has {actual}"
