"""The package's layers, checked by walking every import (module level and inside functions).

Data flows one way (design.md): `models` and `data` import nothing above them, `engine` and `inference` are
siblings, no task imports another task, and nothing but the CLI imports the CLI. A new top-level package or module
gets a row in `ALLOWED`; the test fails until it has one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "segwise"

BASE = {"errors", "io_utils", "progress"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "io_utils": {"errors"},
    "progress": set(),
    "visualize": BASE,
    "data": BASE,
    "config": BASE | {"data"},
    "models": BASE,
    "losses": BASE,
    "metrics": BASE | {"data"},
    "engine": BASE | {"config", "data", "models", "losses", "metrics", "visualize"},
    "inference": BASE | {"data", "models", "visualize"},
    "convert": BASE | {"data", "models", "visualize"},
    "export": BASE | {"models", "inference"},
    "tasks": BASE | {"config", "data", "models", "losses", "metrics", "visualize", "engine", "inference"},
    "report": BASE | {"data", "metrics", "visualize", "tasks"},
    "serve": BASE | {"data", "models", "visualize", "inference"},
    "cli": BASE | {"config", "data", "models", "losses", "metrics", "visualize", "engine", "inference", "convert",
                   "export", "tasks", "serve", "report"},
    "__main__": {"cli"},
}


def unit(path: Path) -> str:
    """Top-level package or module of a file: `segwise/engine/run.py` → 'engine'."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    """Every `segwise.*` module a file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "segwise":
                found |= {f"segwise.{alias.name}" for alias in node.names}
            elif node.module.startswith("segwise."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("segwise.")}
    return found


def source_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_top_level_unit_has_a_row():
    units = {unit(p) for p in source_files()}
    assert units <= set(ALLOWED), f"add a row to ALLOWED for {sorted(units - set(ALLOWED))}"


def test_no_module_imports_a_layer_above_it():
    upward = []
    for path in source_files():
        here = unit(path)
        for module in imported_modules(path):
            target = module.split(".")[1]
            if target != here and target not in ALLOWED.get(here, set()):
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_task_imports_another_task():
    crossing = []
    for path in (PACKAGE / "tasks").rglob("*.py"):
        parts = path.relative_to(PACKAGE / "tasks").parts
        if len(parts) < 2:
            continue
        for module in imported_modules(path):
            names = module.split(".")
            if names[1] == "tasks" and len(names) > 2 and names[2] != parts[0]:
                crossing.append(f"tasks/{'/'.join(parts)} imports {module}")
    assert not crossing, "\n".join(crossing)


def test_the_allowed_table_itself_has_no_cycle():
    """So the layers are a real order: following the allowed imports never leads back."""
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in ALLOWED.get(start, ()))

    assert not [u for u in ALLOWED if reaches(u, u, set())]


def test_the_walker_sees_function_level_imports(tmp_path: Path):
    """A guard for the guard: an import hidden inside a function still counts."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from segwise.engine.run import open_run\n    import segwise.tasks.semantic.train\n")
    assert imported_modules(module) == {"segwise.engine.run", "segwise.tasks.semantic.train"}
