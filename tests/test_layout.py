"""The layout's rules, read from the source: layers import downward only (import-linter's
contract in pyproject.toml), no module imports another in a circle or inside a function, the core
never imports a bundled plugin, and bundled plugins import only the public surface."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
PLUGINS = ROOT / "plugins"
CORE_FILES = sorted(CORE.rglob("*.py"))
PLUGIN_FILES = sorted(PLUGINS.rglob("*.py"))
#: What a plugin may import from imgclust: the documented surface.
PUBLIC = ("imgclust", "imgclust.kit", "imgclust.errors", "imgclust.metrics", "imgclust.testing")


def module_name(path: Path) -> str:
    """``core/report/plots/stage.py`` -> ``imgclust.report.plots.stage`` (a package's
    ``__init__`` is itself)."""
    in_core = CORE in path.parents
    base, prefix = (CORE, ["imgclust"]) if in_core else (PLUGINS, ["imgclust", "plugins"])
    parts = [*prefix, *path.relative_to(base).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(
    path: Path, inside_functions: bool = False, name: str | None = None
) -> list[tuple[int, str]]:
    """Each import of an imgclust module in ``path`` (line, module), relative ones resolved; only
    those inside function bodies with ``inside_functions``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes: list[ast.AST] = []
    if inside_functions:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nodes += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    else:
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            found.append((node.lineno, origin))
    return sorted({(line, m) for line, m in found if m.split(".")[0] == "imgclust"})


LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_scan_sees_the_core_and_can_fail(tmp_path):
    assert len(CORE_FILES) > 60 and CORE / "io" / "images.py" in CORE_FILES
    projection = project_imports(CORE / "report" / "plots" / "projection.py")
    assert "imgclust.kit.arrays" in {m for _, m in projection}
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from .kit import arrays\n    import imgclust.engine\n")
    found = project_imports(planted, inside_functions=True, name="imgclust.planted")
    assert found == [(2, "imgclust.kit"), (3, "imgclust.engine")]


@pytest.mark.parametrize(
    "path", [*CORE_FILES, *PLUGIN_FILES], ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_module_imports_another_inside_a_function(path: Path):
    """Layers without a circle need no deferred imports; heavy third-party libraries (Keras,
    UMAP, Dask, Matplotlib) are the only imports a function may make."""
    assert project_imports(path, inside_functions=True) == []


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_a_bundled_plugin(path: Path):
    assert [m for _, m in project_imports(path) if under(m, ("imgclust.plugins",))] == []


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_bundled_plugins_import_only_the_public_surface(path: Path):
    """What a third-party plugin can use, the bundled ones use: they are the examples."""
    imported = [m for _, m in project_imports(path) if not under(m, ("imgclust.plugins",))]
    assert [m for m in imported if m not in PUBLIC] == []


def test_the_layers_hold():
    """import-linter's contract (pyproject.toml) over the installed package."""
    result = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_module_imports_in_a_circle():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("imgclust", exclude_type_checking_imports=True)
    modules = sorted(m for m in graph.modules if not m.startswith("imgclust.plugins"))
    circles = []
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                circles.append((module, imported))
    assert circles == []


def test_the_version_is_written_once_and_the_package_says_it_is_typed():
    from importlib.metadata import version

    import imgclust

    assert imgclust.__version__ == version("imgclust")
    assert f'"{imgclust.__version__}"' not in (CORE / "__init__.py").read_text()
    assert (Path(imgclust.__file__).parent / "py.typed").is_file()
