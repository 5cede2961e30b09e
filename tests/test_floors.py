"""The floors of the code (README, "Where things live"): what each folder may import.

    stages.base   records, the stage contract, meter, catalog, exit codes: nothing above it
    stages        stage logic: on the base floor only
    simulation    simulated workloads: on stages (it runs the pipeline only as a command)
    pipeline      runner, transport, supervisor, wiring, config, CLI: on all of the above
    tests, bench  on top; bench does not import tests

Every import counts, deferred and type-only ones included, and the modules import no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("stages", "simulation", "pipeline", "tests", "bench")
# package → the packages of ours it must never import
FORBIDDEN = {
    "stages.base": ("stages", "simulation", "pipeline", "tests", "bench"),
    "stages": ("simulation", "pipeline", "tests", "bench"),
    "simulation": ("pipeline", "tests", "bench"),
    "pipeline": ("tests", "bench"),
    "bench": ("tests",),
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of ours in ``path``, wherever it stands."""
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from stages import classify` imports the module stages.classify
            names = [
                f"{node.module}.{alias.name}"
                if (root / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] in OURS:
                yield node.lineno, name


def floor_of(module: str) -> str | None:
    for package in sorted(FORBIDDEN, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return None


def graph(root: Path) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            edges[module_name(root, path)] = {m for _, m in imports_of(root, path)}
    return edges


def violations(root: Path) -> list[str]:
    found = []
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(root, path)
            floor = floor_of(module)
            if floor is None:
                continue
            for line, imported in imports_of(root, path):
                if (floor_of(imported) or imported.split(".")[0]) in FORBIDDEN[floor]:
                    found.append(f"{path.relative_to(root)}:{line}: {floor} imports {imported}")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the modules along it (an iterative depth-first search)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if start in state:
            continue
        path = [start]
        todo = [iter(sorted(edges[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
                continue
            if nxt not in edges or nxt == path[-1]:
                continue
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(edges[nxt])))
    return found


def test_no_floor_imports_one_above_it() -> None:
    assert violations(ROOT) == []


def test_the_modules_import_no_cycle() -> None:
    assert cycles(graph(ROOT)) == []


def test_the_checks_see_what_they_must_refuse(tmp_path: Path) -> None:
    """A deferred, type-only import from a stage into pipeline, one from the base floor
    into a stage module, and a cycle are all caught."""
    for folder in (*OURS, "stages/base"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "config.py").write_text("import stages.scan\n")
    (tmp_path / "stages" / "scan.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pipeline.config import Config\n"
        "def f() -> None:\n    from pipeline import config\n"
    )
    (tmp_path / "stages" / "base" / "schema.py").write_text("from stages import scan\n")
    assert violations(tmp_path) == [
        "stages/base/schema.py:1: stages.base imports stages.scan",
        "stages/scan.py:3: stages imports pipeline.config",
        "stages/scan.py:5: stages imports pipeline.config",
    ]
    assert cycles(graph(tmp_path)) == [["pipeline.config", "stages.scan", "pipeline.config"]]
