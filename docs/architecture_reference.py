"""Write docs/architecture.md, the code layout, from the code:
``python docs/architecture_reference.py``.

The layers come from import-linter's contract in pyproject.toml (the order it enforces), and each
package and module is described by the first paragraph of its own docstring, so the page, the
folder tree and the checked layers cannot drift apart (tests/test_architecture_doc.py).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "architecture.md"
HEADER = (
    "<!-- Generated from the modules' docstrings and pyproject.toml by "
    "docs/architecture_reference.py; edit those, then run: "
    "python docs/architecture_reference.py -->"
)
INTRO = """\
# Code layout

`core/` is the import package `imgclust`; `plugins/` is `imgclust.plugins`, the bundled plugins,
loaded through the `imgclust` entry points like anyone else's. The core is a stack of layers: each
imports only the layers below it, no module imports another in a circle or inside a function
(except to defer a heavy third-party library: Keras, UMAP, Dask, Matplotlib), and the core never
imports a bundled plugin. `lint-imports` (import-linter, contract in `pyproject.toml`) and
`tests/test_layout.py` check this in CI.

**Public surface.** `imgclust` (run, load, Pipeline, get_*, ImageSet and the stage protocols,
errors, hookimpl), `imgclust.errors`, `imgclust.metrics`, `imgclust.testing` (conformance checks for
plugin authors) and `imgclust.kit` (what a stage plugin builds on). Bundled plugins import only
these, as a third-party plugin should; everything else may move between releases. The previous
release's module paths (`imgclust.autoencoder`, `imgclust.sklearn_adapter`, ...) still import, with
a `DeprecationWarning` naming the new import (`imgclust.moved`).

**The flow of `imgclust run`.** `cli` resolves a configuration (`engine.config`) through the
plugins' registry (`stages`), then `engine.runner.execute` goes through its named steps: prepare
(seed, build the pipeline and load the data: `engine.build`), open the run folder
(`io.runfolder`), write its inputs, measure invariances (`kit.invariances`), fit the encoders,
cluster, refine, score (`results`), write the results and the fitted pipeline (`engine.persist`),
plot and write the page (`report`), and finalise the folder. Stage kinds (dataset, encoder,
clusterer, refiner) are one table, `stages.kinds`.
"""


def first_paragraph(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def layers() -> list[list[str]]:
    """The layers, top first, as import-linter checks them (siblings in one layer together)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = config["tool"]["importlinter"]["contracts"][0]
    return [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]


def source_of(module: str) -> Path:
    """``imgclust.engine`` -> ``core/engine`` (a package) or ``core/engine.py``."""
    path = ROOT / "core" / Path(*module.split(".")[1:])
    return path if path.is_dir() else path.with_suffix(".py")


def module_lines(path: Path, indent: str) -> list[str]:
    """A package's modules (and sub-packages), each with its first docstring paragraph."""
    lines = []
    for child in sorted(path.iterdir()):
        if child.name == "__init__.py" or child.name.startswith((".", "_")):
            continue
        if child.is_dir() and (child / "__init__.py").is_file():
            lines.append(f"{indent}- `{child.name}/`: {first_paragraph(child / '__init__.py')}")
            lines += module_lines(child, indent + "  ")
        elif child.suffix == ".py":
            lines.append(f"{indent}- `{child.name}`: {first_paragraph(child)}")
    return lines


def render() -> str:
    """The layout page as Markdown."""
    parts = [HEADER, "", INTRO, "## The layers, top first", ""]
    for number, layer in enumerate(layers(), 1):
        for module in layer:
            path = source_of(module)
            name = f"{path.relative_to(ROOT / 'core')}" + ("/" if path.is_dir() else "")
            doc = first_paragraph(path / "__init__.py" if path.is_dir() else path)
            parts.append(f"### {number}. `{module}` (`core/{name}`)")
            parts.append("")
            parts.append(doc)
            if path.is_dir():
                parts += ["", *module_lines(path, "")]
            parts.append("")
    others = ["__init__.py", "__main__.py", "console.py", "errors.py", "moved.py"]
    others = [name for name in others if f"imgclust.{name[:-3]}" not in str(layers())]
    parts += ["## Outside the layers", ""]
    parts += [f"- `core/{name}`: {first_paragraph(ROOT / 'core' / name)}" for name in others]
    parts += ["", "## Bundled plugins (`plugins/`)", ""]
    parts += module_lines(ROOT / "plugins", "")
    return "\n".join(parts).rstrip("\n") + "\n"


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
