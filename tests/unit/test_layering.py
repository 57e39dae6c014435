"""The project's layering, read from its source: what may import what, and what a module exports.

Every module of ``infra``, ``devtools``, ``handlers`` and ``tasks`` is parsed with :mod:`ast`;
its imports -- at module level and inside functions, ``from X import Y`` counting as importing
``X.Y`` when ``Y`` is a submodule -- make the import graph. The rules:

- no import cycle anywhere (imports under ``if TYPE_CHECKING:`` left out: they never run);
- the engine (``infra``) never imports the tooling, the example app, the handlers or the tests;
- inside ``infra``, each sub-package imports only the layers below it (:data:`MAY_IMPORT`);
- each sub-package says what it may import and lists its modules in ``__all__``; every module
  of ``infra`` and ``devtools`` declares ``__all__``, naming only what it defines;
- across ``infra`` packages only public names (those in the target's ``__all__``) are imported;
- importing a Lambda entry point reaches no local tooling and makes no AWS client;
- a function-level import in ``infra`` or ``handlers`` says why on its own line.

Rules b, c and e count ``TYPE_CHECKING`` imports too: a type-only dependency still points
somewhere. Each rule lists every offender in its failure message.
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import tokenize
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("infra", "devtools", "handlers", "tasks")
FORBIDDEN_IN_ENGINE = ("devtools", "tasks", "handlers", "tests")
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "wire": frozenset({"core"}),
    "store": frozenset({"core", "wire"}),
    "consumer": frozenset({"core", "wire", "store"}),
    "producer": frozenset({"core", "wire", "store"}),
    "worker": frozenset({"core", "wire", "store"}),
    "beat": frozenset({"core", "wire", "store"}),
}
"""The infra sub-packages each sub-package may import (``infra.install`` and ``infra``'s own
``__init__`` may import any)."""
ROOT_LAYER = ""
"""The layer of ``infra`` and ``infra.install``: above every sub-package."""
NOT_IN_A_LAMBDA = ("click", "rich", "localstack_client", "moto", "devtools", "tests")
DIRECTIVES = re.compile(
    r"noqa(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(?:\[[^\]]*\])?|pragma:[^#]*",
    re.IGNORECASE,
)
"""Lint directives, which name no reason."""


# ---------------------------------------------------------------- the scan


@dataclass(frozen=True, slots=True)
class Import:
    """One ``import`` statement (``names`` empty) or ``from module import names``."""

    module: str
    names: tuple[str, ...]
    line: int
    end_line: int
    in_function: bool
    type_checking: bool


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    source: str

    @property
    def where(self) -> str:
        return str(self.path.relative_to(ROOT))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Module]:
    """Every module of the project, by dotted name."""
    found = {}
    for top in PROJECT:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            source = path.read_text(encoding="utf-8")
            name = module_name(path)
            tree = ast.parse(source, filename=str(path))
            found[name] = Module(name, path, path.name == "__init__.py", tree, source)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: Module) -> list[Import]:
    """Every import of ``module``, wherever it is, and whether it sits in a function or under
    ``if TYPE_CHECKING:``."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            end = node.end_lineno or node.lineno
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(
                        Import(alias.name, (), node.lineno, end, in_function, type_checking)
                    )
            else:
                names = tuple(alias.name for alias in node.names)
                target = _absolute(module, node)
                found.append(Import(target, names, node.lineno, end, in_function, type_checking))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, in_function, True)
            for child in node.orelse:
                visit(child, in_function, type_checking)
            return
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inside, type_checking)

    visit(module.tree, False, False)
    return found


def project_targets(ref: Import, known: Container[str]) -> set[str]:
    """The project modules an import makes run (a submodule named by ``from X import Y``
    counts as ``X.Y``)."""

    def longest_known(name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                return ".".join(parts[:end])
        return None

    if not ref.names:
        return {t for t in [longest_known(ref.module)] if t}
    targets = set()
    for name in ref.names:
        if f"{ref.module}.{name}" in known:
            targets.add(f"{ref.module}.{name}")
        elif (found := longest_known(ref.module)) is not None:
            targets.add(found)
    return targets


def import_graph(known: Mapping[str, Module]) -> dict[str, set[str]]:
    """Module → the project modules it imports (``TYPE_CHECKING`` imports left out)."""
    return {
        name: {
            target
            for ref in imports_of(module)
            if not ref.type_checking
            for target in project_targets(ref, known)
            if target != name
        }
        for name, module in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def a_cycle_through(component: list[str], graph: Mapping[str, set[str]]) -> list[str]:
    """One import path from the component's first module back to it (breadth first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component


def literal_all(module: Module) -> list[str] | None:
    """The module's ``__all__`` if it assigns a literal list or tuple of strings, else None."""
    for node in module.tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value
            if isinstance(value, ast.List | ast.Tuple) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
            ):
                return [e.value for e in value.elts if isinstance(e, ast.Constant)]
            return None
    return None


def defines_all(module: Module) -> bool:
    return any(
        isinstance(t, ast.Name) and t.id == "__all__"
        for node in module.tree.body
        for t in (node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)])
    )


def bound_names(module: Module) -> set[str]:
    """Names bound at the module's top level (in ``if``/``try``/``with`` blocks too), and its
    submodules when it is a package."""
    names: set[str] = set()

    def bind(target: ast.AST) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
                bind(node.target)
            if isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(module.tree.body)
    if module.is_package:
        names |= set(submodules(module))
    return names


def submodules(package: Module) -> list[str]:
    """The modules and sub-packages directly inside ``package``, sorted."""
    folder = package.path.parent
    return sorted(
        p.stem if p.is_file() else p.name
        for p in folder.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    )


def layer_of(name: str) -> str | None:
    """``core`` for ``infra.core.*``; :data:`ROOT_LAYER` for ``infra`` and ``infra.install``."""
    parts = name.split(".")
    if parts[0] != "infra":
        return None
    if len(parts) == 1 or not (ROOT / "infra" / parts[1] / "__init__.py").is_file():
        return ROOT_LAYER
    return parts[1]


def comment_text(source: str, first: int, last: int) -> str:
    """The comments on lines ``first``..``last`` of ``source``, joined."""
    comments = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and first <= token.start[0] <= last:
            comments.append(token.string.lstrip("#").strip())
    return " ".join(comments)


def names_a_reason(comment: str) -> bool:
    """Words beyond lint directives (``noqa``, ``type: ignore``)."""
    return re.search(r"[A-Za-z]{2,}", DIRECTIVES.sub(" ", comment)) is not None


def in_folders(*folders: str) -> Iterator[Module]:
    for name, module in modules().items():
        if name.split(".")[0] in folders:
            yield module


# ---------------------------------------------------------------- the scan, checked


def _scanned(source: str, name: str = "pkg.mod") -> list[Import]:
    module = Module(name, ROOT / "x.py", False, ast.parse(source), source)
    return imports_of(module)


def test_the_scan_sees_every_kind_of_import() -> None:
    found = _scanned(
        "from typing import TYPE_CHECKING\n"
        "import a.b as c\n"
        "if TYPE_CHECKING:\n    from d import e\nelse:\n    import f\n"
        "def g():\n    if True:\n        from .h import i  # lazily: why\n"
    )

    assert [(i.module, i.names, i.in_function, i.type_checking) for i in found] == [
        ("typing", ("TYPE_CHECKING",), False, False),
        ("a.b", (), False, False),
        ("d", ("e",), False, True),
        ("f", (), False, False),
        ("pkg.h", ("i",), True, False),
    ]
    known = {"x", "x.y"}
    assert project_targets(Import("x", ("y", "z"), 1, 1, False, False), known) == {"x.y", "x"}
    assert project_targets(Import("x.y.attr", (), 1, 1, False, False), known) == {"x.y"}


def test_the_scan_finds_cycles_and_the_real_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}

    assert cycles(graph) == [["a", "b", "c"]]
    assert a_cycle_through(["a", "b", "c"], graph) == ["a", "b", "c", "a"]
    real = import_graph(modules())
    assert {"infra.consumer.runtime", "infra.core.observability"} <= real["infra.consumer.handler"]
    assert "infra.install" in real["infra"]  # a function-level import
    assert not any(t.startswith("celery") for t in real["infra"])  # only project modules


def test_comments_name_a_reason_unless_they_are_only_directives() -> None:
    assert names_a_reason("lazily: importing infra stays cheap")
    assert names_a_reason("noqa: PLC0415 - Celery imports the app late")
    assert not names_a_reason("noqa: PLC0415")
    assert not names_a_reason("type: ignore[import-untyped]")
    assert not names_a_reason("")


# ---------------------------------------------------------------- a. no cycle


def test_no_import_cycle() -> None:
    graph = import_graph(modules())

    found = cycles(graph)

    assert not found, "import cycles (module-level and function-level imports):\n" + "\n".join(
        f"  {' -> '.join(a_cycle_through(c, graph))}  (all of: {', '.join(c)})" for c in found
    )


# ---------------------------------------------------------------- b. the engine stands alone


def test_the_engine_imports_no_tooling_app_handlers_or_tests() -> None:
    offenders = [
        f"  {module.where}:{ref.line} imports {ref.module}"
        + (" (under TYPE_CHECKING)" if ref.type_checking else "")
        for module in in_folders("infra")
        for ref in imports_of(module)
        if ref.module.split(".")[0] in FORBIDDEN_IN_ENGINE
    ]

    assert not offenders, "infra/ imports what ships apart from it:\n" + "\n".join(offenders)


# ---------------------------------------------------------------- c. layers inside infra


def test_infra_packages_import_only_the_layers_below() -> None:
    known = modules()
    offenders = []
    unknown = set()
    for module in in_folders("infra"):
        layer = layer_of(module.name)
        if layer == ROOT_LAYER:
            continue
        assert layer is not None
        if layer not in MAY_IMPORT:
            unknown.add(layer)
            continue
        for ref in imports_of(module):
            for target in sorted(project_targets(ref, known)):
                to = layer_of(target)
                if to is not None and to != layer and to not in MAY_IMPORT[layer]:
                    offenders.append(
                        f"  {module.where}:{ref.line} ({layer}) imports {target}"
                        + (" (under TYPE_CHECKING)" if ref.type_checking else "")
                        + f"; {layer} may import only {sorted(MAY_IMPORT[layer]) or 'nothing'}"
                    )

    assert not unknown, f"infra sub-packages missing from MAY_IMPORT: {sorted(unknown)}"
    assert not offenders, "imports against the layer direction:\n" + "\n".join(offenders)


# ---------------------------------------------------------------- d. docstrings and __all__


def test_each_infra_package_says_what_it_may_import_and_lists_its_modules() -> None:
    offenders = []
    for name, package in modules().items():
        if not package.is_package or layer_of(name) in (None, ROOT_LAYER) or name.count(".") != 1:
            continue
        docstring = ast.get_docstring(package.tree) or ""
        if "May import" not in docstring:
            offenders.append(f"  {package.where}: docstring does not say what it 'May import'")
        listed, expected = literal_all(package), submodules(package)
        if listed != expected:
            offenders.append(f"  {package.where}: __all__ is {listed}, its modules are {expected}")

    assert not offenders, "infra sub-packages:\n" + "\n".join(offenders)


def test_every_module_of_infra_and_devtools_declares_existing_public_names() -> None:
    offenders = []
    for module in in_folders("infra", "devtools"):
        listed = literal_all(module)
        if listed is None:
            reason = "__all__ is not a literal list of strings" if defines_all(module) else ""
            offenders.append(f"  {module.where}: {reason or 'no __all__'}")
            continue
        missing = sorted(set(listed) - bound_names(module))
        if missing:
            offenders.append(f"  {module.where}: __all__ names what it does not define: {missing}")

    assert not offenders, "modules without a true __all__:\n" + "\n".join(offenders)


# ---------------------------------------------------------------- e. public names across packages


def test_imports_across_infra_packages_use_public_names() -> None:
    known = modules()
    offenders = []
    for module in in_folders("infra"):
        for ref in imports_of(module):
            target = known.get(ref.module)
            if not ref.names or target is None or layer_of(ref.module) == layer_of(module.name):
                continue
            public = literal_all(target)
            for name in ref.names:
                if f"{ref.module}.{name}" in known or (public is not None and name in public):
                    continue
                why = "has no literal __all__" if public is None else "does not export it"
                offenders.append(
                    f"  {module.where}:{ref.line} imports {name} from {ref.module}, which {why}"
                )

    assert not offenders, "imports of private names across infra packages:\n" + "\n".join(offenders)


# ---------------------------------------------------------------- f. what a Lambda imports

RUNTIME_DEPENDENCIES = ("celery.app.base", "kombu.transport.SQS", "boto3", "aws_lambda_powertools")
"""What a Lambda must import anyway; what they reach themselves (Celery imports click) is not the
project's doing."""
CHECK = """
import json, sys, traceback
import botocore.session
made = []
create_client = botocore.session.Session.create_client
def counting(self, service_name, *args, **kwargs):
    stack = traceback.extract_stack()[:-1]
    callers = [f for f in stack if "/botocore/" not in f.filename and "/boto3/" not in f.filename]
    ours = [f for f in stack if f.filename.startswith(ROOT) and "/.venv/" not in f.filename]
    where = [f"{f.filename.removeprefix(ROOT)}:{f.lineno}" for f in (callers[-1:] + ours[-1:])]
    made.append(f"{service_name} (made at {' from '.join(where)})")
    return create_client(self, service_name, *args, **kwargs)
botocore.session.Session.create_client = counting
import importlib
for name in MODULES:
    importlib.import_module(name)
banned = sorted({m.split(".")[0] for m in sys.modules} & set(BANNED))
print(json.dumps({"banned": banned, "clients": made}))
"""


def imported_by(*names: str) -> dict[str, list[str]]:
    """What importing ``names`` in a fresh interpreter reaches of :data:`NOT_IN_A_LAMBDA`, and
    the AWS clients it creates (where)."""
    script = (
        CHECK.replace("ROOT", repr(f"{ROOT}/"))
        .replace("MODULES", repr(names))
        .replace("BANNED", repr(NOT_IN_A_LAMBDA))
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": "", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, list[str]] = json.loads(out.stdout)
    return report


@cache
def baseline() -> dict[str, list[str]]:
    return imported_by(*RUNTIME_DEPENDENCIES)


@pytest.mark.parametrize("module", ["handlers.sqs", "handlers.beat"])
def test_handler_import_reaches_no_local_tooling_and_makes_no_client(module: str) -> None:
    report, anyway = imported_by(module), baseline()

    reached = sorted(set(report["banned"]) - set(anyway["banned"]))
    made = [client for client in report["clients"] if client not in anyway["clients"]]

    assert (reached, made) == ([], []), (
        f"importing {module} reached {reached} (beyond {sorted(anyway['banned'])}, which its "
        f"runtime dependencies import themselves) and created AWS clients {made}"
    )


# ---------------------------------------------------------------- g. lazy imports say why


def test_function_level_imports_in_the_engine_and_handlers_say_why() -> None:
    offenders = [
        f"  {module.where}:{ref.line} imports {ref.module}"
        + (f" ({', '.join(ref.names)})" if ref.names else "")
        + " inside a function"
        for module in in_folders("infra", "handlers")
        for ref in imports_of(module)
        if ref.in_function
        and not names_a_reason(comment_text(module.source, ref.line, ref.end_line))
    ]

    assert not offenders, (
        "function-level imports need a trailing comment naming the reason:\n" + "\n".join(offenders)
    )
