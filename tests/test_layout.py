"""The house as plan.md draws it: which room may import which, no circle of imports,
and the todo API's runtime and ``alembic upgrade`` loading only what they need.

The rooms and their allowed arrows are read from the block of
``specs/001-database-layer/plan.md`` ("Rooms and the arrows allowed"), so the drawing
and the test cannot drift apart. Imports are read from the source (every ``import``,
at module level or inside a function), so an import a test run never executes breaks
the plan as surely as one it does.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import PROJECT_ROOT, child_url

PLAN = PROJECT_ROOT / "specs" / "001-database-layer" / "plan.md"
#: Where the rooms' code lives: every module of these is in some room.
SOURCES = ("models", "session_binding", "todo_database", "migrations/env.py")
#: Prefix of the plan's room names inside todo_database/.
PACKAGE = "todo_database"


def allowed_arrows() -> dict[str, set[str]]:
    """room -> the rooms it may import, from plan.md's block."""
    text = PLAN.read_text()
    match = re.search(
        r"<!-- rooms: read by tests/test_layout.py -->\n```text\n(.*?)```", text, re.S
    )
    assert match, f"{PLAN.name} has no rooms block"
    arrows: dict[str, set[str]] = {}
    for line in match.group(1).splitlines():
        room, *targets = line.split()
        arrows[room] = {
            target
            if target in ("models", "session_binding", "migrations")
            else f"{PACKAGE}.{target}"
            for target in targets
            if target != "-"
        }
    return arrows


ARROWS = allowed_arrows()


def room_of(module: str) -> str | None:
    """The room `module` belongs to (the longest room name it starts with), or None
    for a module that is not ours."""
    found = [room for room in ARROWS if module == room or module.startswith(f"{room}.")]
    return max(found, key=len) if found else None


def modules() -> Iterator[tuple[str, Path]]:
    for source in SOURCES:
        path = PROJECT_ROOT / source
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            relative = file.relative_to(PROJECT_ROOT).with_suffix("")
            name = ".".join(relative.parts).removesuffix(".__init__")
            yield name, file


def imports(file: Path) -> Iterator[tuple[str, int]]:
    """Every first-party module `file` imports, with its line: ``from a.b import c``
    names ``a.b.c`` when that is a module of ours, else ``a.b``."""
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                ours = any(name == candidate for name, _ in MODULES)
                yield candidate if ours else node.module, node.lineno


MODULES = list(modules())


def test_every_module_is_in_a_room() -> None:
    homeless = [name for name, _ in MODULES if room_of(name) is None and name != PACKAGE]
    assert homeless == [], "modules in no room of plan.md"


@pytest.mark.parametrize(("module", "file"), MODULES, ids=[name for name, _ in MODULES])
def test_imports_follow_the_plan(module: str, file: Path) -> None:
    home = room_of(module)
    wrong = []
    for target, line in imports(file):
        room = room_of(target)
        if room is None or room == home or home is None:
            continue
        if room not in ARROWS.get(home, set()):
            wrong.append(f"{file.relative_to(PROJECT_ROOT)}:{line} imports {target} ({room})")
    assert wrong == [], f"{home} may import only {sorted(ARROWS.get(home or '', set()))}"


def test_no_module_imports_itself_around_a_circle() -> None:
    """Module to module, every import counted (inside functions too)."""
    ours = {name for name, _ in MODULES}
    graph = {
        name: {
            target
            for target, _ in imports(file)
            if target in ours and target != name and not name.startswith(f"{target}.")
        }
        for name, file in MODULES
    }
    # Tarjan's strongly connected components (the graph is small enough to recurse).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` in the project."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(result.stdout.split())


def test_the_api_runtime_imports_without_alembic() -> None:
    loaded = loaded_by("import session_binding, models")
    assert not {name for name in loaded if name.split(".")[0] in ("alembic", PACKAGE)}


def test_an_upgrade_loads_neither_autogenerate_nor_review_nor_the_neon_client(
    head_url: URL,
) -> None:
    """What ``alembic upgrade head`` imports, at head (nothing to run)."""
    loaded = loaded_by(
        "import os, alembic.config\n"
        f"os.environ['DATABASE_URL'] = {child_url(head_url)!r}\n"
        "alembic.config.main(argv=['-q', 'upgrade', 'head'])"
    )
    assert not {
        name
        for name in loaded
        if name.startswith(
            (f"{PACKAGE}.autogenerate", f"{PACKAGE}.review", f"{PACKAGE}.neon.client", "httpx")
        )
    }
