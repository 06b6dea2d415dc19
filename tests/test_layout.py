"""The layout's rules, read from the source with ``ast``: the core never imports a bundled plugin,
and the plots and the HTML report import nothing above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"
# What plots and the report must not reach up to: the flow that runs them, and the CLI.
ABOVE_REPORTING = (
    "imgclust.engine.runner",
    "imgclust.engine.persist",
    "imgclust.engine.config",
    "imgclust.cli.app",
    "imgclust.cli.commands",
    "imgclust.api",
    "imgclust.after.rundata",
    "imgclust.stages.host",
    "imgclust.plugins",
)


def module_name(path: Path) -> str:
    """``core/report/plots/stage.py`` -> ``imgclust.report.plots.stage`` (a package's
    ``__init__`` is itself)."""
    parts = ["imgclust", *path.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def reaches(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


CORE_FILES = sorted(CORE.rglob("*.py"))
REPORTING = [p for p in CORE_FILES if "plots" in p.relative_to(CORE).parts] + [
    CORE / "report_html.py",
    CORE / "report_explorer.py",
]


def test_the_scan_sees_the_core_and_resolves_relative_imports():
    assert len(CORE_FILES) > 30 and CORE / "io" / "images.py" in CORE_FILES
    assert "imgclust.kit.arrays.sample_index" in imported(CORE / "plots" / "projection.py")
    assert "imgclust.report.plots.inputs" in imported(CORE / "rundata.py")
    assert reaches(imported(CORE / "rundata.py"), ABOVE_REPORTING)  # the check can fail


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_no_core_module_imports_a_bundled_plugin(path: Path):
    assert reaches(imported(path), ("imgclust.plugins",)) == []


@pytest.mark.parametrize("path", REPORTING, ids=lambda p: str(p.relative_to(CORE)))
def test_plots_and_the_report_import_nothing_above_them(path: Path):
    assert reaches(imported(path), ABOVE_REPORTING) == []


def test_the_version_is_written_once_and_the_package_says_it_is_typed():
    from importlib.metadata import version
    from pathlib import Path

    import imgclust

    assert imgclust.__version__ == version("imgclust")
    root = Path(__file__).resolve().parent.parent
    assert f"\"{imgclust.__version__}\"" not in (root / "core" / "__init__.py").read_text()
    assert (Path(imgclust.__file__).parent / "py.typed").is_file()
