"""The layers of ``dfcore`` point one way: cli → app → worker → client → jetstream → core.

Every import is read from the source, including those under ``if TYPE_CHECKING:`` and those
inside functions, so a cycle cannot hide behind either.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import dfcore

PACKAGE = pathlib.Path(dfcore.__file__).parent

#: The layers from the bottom up; a module may import its own layer and those below it.
LAYERS = ["core", "jetstream", "client", "worker", "app", "cli"]
NO_NATS = {"core"}  # the replay core is tested with plain lists: nothing from NATS


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if parts[1:] == ["__main__"]:
        return "cli"
    return "app"  # dfcore itself and its top-level modules: the facade users import


def imports(module: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> Iterator[str]:
    """The absolute names ``module`` imports, at any depth of its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                yield name if name in known else base


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = set()
        for name in imports(module, path, known):
            while name not in known and "." in name:
                name = name.rpartition(".")[0]
            if name in known and name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def test_no_import_points_up_a_layer():
    upward = [
        f"{source} ({layer_of(source)}) imports {target} ({layer_of(target)})"
        for source, targets in graph().items()
        for target in targets
        if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(source))
        and target != "dfcore"  # importing a submodule runs dfcore/__init__; that is no arrow
    ]
    assert upward == []


def test_there_is_no_import_cycle():
    edges = graph()
    cycles = []
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(" → ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_core_imports_nothing_from_nats():
    known = modules()
    offenders = [
        f"{module} imports {name}"
        for module, path in known.items()
        if layer_of(module) in NO_NATS
        for name in imports(module, path, known)
        if name == "nats" or name.startswith("nats.") or name.startswith("dfcore.jetstream")
    ]
    assert offenders == []


def test_the_checker_sees_hidden_imports(tmp_path):
    """An import under TYPE_CHECKING and a relative one inside a function both count."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dfcore._app import App\n"
        "def f():\n    from ..worker import _worker\n"
    )
    found = set(imports("dfcore.client._mod", source, modules()))
    assert found == {"typing", "dfcore._app", "dfcore.worker._worker"}


#: The only modules that build the JetStream store; the rest of the client and the worker use
#: the storage protocols (dfcore/client/_storage.py, dfcore/worker/_storage.py).
STORE_BUILDERS = {"dfcore.client._loop_client", "dfcore.worker._worker"}


def test_the_client_and_the_worker_use_the_store_through_its_protocols():
    offenders = sorted(
        module
        for module, path in modules().items()
        if layer_of(module) in ("client", "worker") and module not in STORE_BUILDERS
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and node.module == "dfcore.jetstream._store"
        and "Store" in {alias.name for alias in node.names}
    )
    assert offenders == []
    assert all(  # and the test sees an import of it
        "Store" in path.read_text() for path in map(modules().get, STORE_BUILDERS) if path
    )
