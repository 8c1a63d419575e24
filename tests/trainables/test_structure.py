"""The floor plan of trainables/, read from the source with ast so that it cannot drift from the code:
nothing imports the driver, the shared parts import no task, and no task imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trainables.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2] / "trainables"
ENTRY_POINTS = {"train.py", "tune_entry.py"}  # `sweep train` and the Ray trainable: they read the registry


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (a function-level import counts too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(ROOT.rglob("*.py"))
SHARED = [p for p in MODULES if p.parent == ROOT and p.name not in ENTRY_POINTS]
TASK_FOLDERS = sorted(p for p in (ROOT / "tasks").iterdir() if p.is_dir() and (p / "__init__.py").exists())


def test_the_layout_is_what_the_checks_below_assume():
    assert {p.name for p in TASK_FOLDERS} == set(TASKS)  # one folder per registered task, and no other
    assert len(SHARED) >= 10 and all((ROOT / name).exists() for name in ENTRY_POINTS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_in_trainables_imports_the_driver(path):
    assert not {m for m in imports(path) if m == "sweep" or m.startswith("sweep.")}


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.name)
def test_the_shared_parts_import_no_task(path):
    assert not {m for m in imports(path) if m == "trainables.tasks" or m.startswith("trainables.tasks.")}


@pytest.mark.parametrize("folder", TASK_FOLDERS, ids=lambda p: p.name)
def test_no_task_imports_another(folder):
    own = f"trainables.tasks.{folder.name}"
    for path in sorted(folder.rglob("*.py")):
        foreign = {m for m in imports(path) if m.startswith("trainables.tasks") and m != own
                   and not m.startswith(own + ".")}
        assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"
