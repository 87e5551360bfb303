"""The house rules, checked on the source: rooms point down, nobody borrows private names,
no room is too big to live in. Read from the files (ast), so nothing here imports the modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gmse_cli"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

# The floors, bottom up (design.md): a module may import its own floor and the floors below.
FLOORS = [
    {"errors", "paths", "messages", "progress", "frozen", "atomic", "cleanup", "inputs", "tomlfile", "figures", "laws", "grammar", "threads",
     "schema", "counts", "memo", "limits", "sigterm", "kernel_cache", "locks"},
    {"spec"},
    {"compress", "interop"},
    {"gmse", "law", "runs"},
    {"rank", "fit", "realmse", "search", "training"},
    {"cli", "__main__"},
]
# The programs: `uscl` and `python -m gmse_cli` (both __main__) run the command line; they sit above it.
ENTRY_POINTS = {PACKAGE / "__main__.py", PACKAGE / "training" / "__main__.py"}


def _room(module: str) -> str | None:
    """'gmse_cli.fit.drivers' -> 'fit'; None for the package itself or outside modules."""
    parts = module.split(".")
    return parts[1] if parts[0] == "gmse_cli" and len(parts) > 1 else None


def _floor(room: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) if room in rooms)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement, relative ones resolved."""
    out = []
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def test_every_room_has_a_floor():
    rooms = {_room(_module_name(p)) for p in MODULES} - {None}
    assert rooms <= set().union(*FLOORS)


def test_arrows_point_down():
    upward = []
    for path in MODULES:
        room = _room(_module_name(path))
        if room is None or path in ENTRY_POINTS:
            continue
        for module, _ in _imports(path):
            target = _room(module)
            if target is not None and _floor(target) > _floor(room):
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert upward == []


def test_the_library_never_imports_the_cli():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in MODULES
        if PACKAGE / "cli" not in path.parents and path not in ENTRY_POINTS
        and any(m == "gmse_cli.cli" or m.startswith("gmse_cli.cli.") for m, _ in _imports(path))
    ]
    assert offenders == []


def test_the_gmse_engine_does_not_import_the_training_extra():
    # The torch backend registers itself from gmse_cli.training (see gmse_cli.gmse.backends).
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in (PACKAGE / "gmse").rglob("*.py")
        if any(m.startswith(("gmse_cli.training", "torch")) for m, _ in _imports(path))
    ]
    assert offenders == []


# public, documented standard-library functions whose names happen to start with "_"
_DOCUMENTED_UNDERSCORE_NAMES = {"os._exit"}


def test_no_module_borrows_private_names():
    borrowed = []
    for path in MODULES:
        for module, names in _imports(path):
            if not module.startswith("gmse_cli"):
                continue
            private_parts = [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_parts or private_names:
                borrowed.append(f"{path.relative_to(PACKAGE)}: from {module} import {', '.join(names)}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                   for a in n.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")
                    and f"{node.value.id}.{node.attr}" not in _DOCUMENTED_UNDERSCORE_NAMES):
                borrowed.append(f"{path.relative_to(PACKAGE)}: {node.value.id}.{node.attr}")
    assert borrowed == []


def test_no_module_is_too_big():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES}
    assert {name: n for name, n in sizes.items() if n > 600} == {}
    assert sum(n <= 400 for n in sizes.values()) > 0.9 * len(sizes)  # most are under 400
