"""The shape of the code: imports run one way and in no circle, the rules live in one
place, and no backend keeps a copy of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backends", "inventory_cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:  # run by Alembic, not imported by inv
                continue
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports, at module level or inside functions (a lazy
    import still makes a circle), leaving out `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            for alias in node.names:
                candidate = f"{origin}.{alias.name}"
                found.add(candidate if candidate in MODULES else origin)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _parents(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & set(MODULES)


def test_there_are_no_import_cycles() -> None:
    # A package's __init__ importing its own submodules is how packages work; a cycle
    # is a path from a module back to itself through modules that are not just the
    # packages that contain it.
    edges = {
        name: {t for t in targets if t not in _parents(name)} for name, targets in GRAPH.items()
    }
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                walk(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert cycles == []


def test_backends_never_import_the_front() -> None:
    for name, targets in GRAPH.items():
        if name.startswith("backends"):
            assert not {t for t in targets if t.startswith("inventory_cli")}, name


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("backends")))
def test_backends_import_no_typer_rich_or_fastapi(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and not node.level
    }
    assert not imported & {"typer", "rich", "fastapi", "click"}


#: Where each rule and grammar is written; nowhere else may write it out again.
RULE_HOMES = {
    "casefold()": {"backends.values"},
    "unicodedata.normalize": {"backends.values"},
    "InsufficientStock(": {
        "backends.rules",
        "backends.kafka.apply",
        "backends.errors",
        "backends.problems",  # read back from a server's problem document
    },
    "not the expected": {"backends.rules"},
    "use --force to write it off": {"backends.rules"},
    "Decimal(": {
        "backends.values",
        "backends.requests",
        "backends.jsontext",
        "backends.postgres.reads",
        "backends.jsonfile",
        "inventory_cli.cli",  # the sum of a report's values
        "backends.wire",  # prices a server wrote, read back
    },
    # Seeding generates ASCII SKUs and names in SQL, where lower() is the key.
    "lower(sku)": {"backends.postgres.seeding"},
    "int(text": {"backends.jsontext"},
}


@pytest.mark.parametrize("needle", sorted(RULE_HOMES))
def test_a_rule_is_written_once(needle: str) -> None:
    holders = {name for name, path in MODULES.items() if needle in path.read_text()}
    assert holders <= RULE_HOMES[needle], holders - RULE_HOMES[needle]
