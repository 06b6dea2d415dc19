"""docs/architecture.md is generated from the modules' docstrings and the layer contract, and kept
current: a module added, moved or described anew changes the page."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "architecture_reference", ROOT / "docs" / "architecture_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_architecture_md_is_current():
    generator = load_generator()
    written = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert written == generator.render(), "run: python docs/architecture_reference.py"


def test_every_module_of_the_core_is_on_the_page_in_its_layer():
    generator = load_generator()
    page = generator.render()
    layered = {m for layer in generator.layers() for m in layer}
    for path in sorted((ROOT / "core").rglob("*.py")):
        rel = path.relative_to(ROOT / "core")
        shown = [f"`{path.name}`", f"core/{rel}", f"`{path.parent.name}/`", f"core/{rel.parent}/"]
        assert any(text in page for text in (shown if path.name == "__init__.py" else shown[:2]))
        top = path.relative_to(ROOT / "core").parts[0].removesuffix(".py")
        if top not in ("__init__", "__main__", "moved"):
            assert f"imgclust.{top}" in layered, path  # every module sits in a checked layer
        assert generator.first_paragraph(path), path
