"""The package's layering, read from the source: which modules import which (nothing runs)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import nncompress

PACKAGE = Path(nncompress.__file__).parent


def _file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"),
                      PACKAGE.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(module: str) -> frozenset[str]:
    """The nncompress modules ``module`` imports anywhere in its code (lazy imports too)."""
    file = _file(module)
    if file is None:
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nncompress"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nncompress"):
            base = str(node.module)
            submodules = {f"{base}.{a.name}" for a in node.names if _file(f"{base}.{a.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in ``base`` itself
                found.add(base)
    return frozenset(m for m in found if m != module)


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(_imports(current))
            parent = current.rpartition(".")[0]
            if parent.startswith("nncompress"):
                todo.append(parent)  # importing a submodule runs its package first
    return seen - {module}


def _modules() -> list[str]:
    return sorted("nncompress." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
                  .removesuffix(".__init__") for p in PACKAGE.rglob("*.py"))


def test_loading_a_run_folder_never_imports_the_runner() -> None:
    for module in ("nncompress.run_folder", "nncompress.cli.evaluate", "nncompress.cli.export"):
        assert "nncompress.pipeline" not in _reachable(module), module


def test_training_code_does_not_import_recipes() -> None:
    training = [m for m in _modules() if m.startswith("nncompress.train")]
    assert "nncompress.train.config" in training
    for module in training:
        assert "nncompress.recipe" not in _imports(module), module


def test_modules_import_the_core_directly_not_the_package_face() -> None:
    # Only ``nncompress/__init__.py`` (the face itself) may import from ``nncompress``.
    modules = [m for m in _modules() if m != "nncompress"]
    assert {"nncompress.pipeline", "nncompress.stages", "nncompress.report.summary"} <= set(modules)
    for module in modules:
        assert "nncompress" not in _imports(module), module


def test_version_matches_the_project_metadata() -> None:
    import tomllib

    from nncompress._version import __version__

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert __version__ == project["project"]["version"] == nncompress.__version__
