"""Type-check the package under the names it is imported by: mypy over core/ and plugins/ as
``imgclust`` and ``imgclust.plugins``, the package-dir mapping of pyproject.toml.

``mypy core plugins`` would name the modules ``core.*`` and ``plugins.*``, and an editable install
maps ``imgclust`` through an import hook that mypy cannot follow, so every ``import imgclust...``
would go unresolved. Settings come from ``[tool.mypy]``; extra arguments pass through to mypy.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_dirs() -> dict[str, str]:
    """The folder of each package, ``{"core": "imgclust", ...}``, read from pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        mapping = tomllib.load(file)["tool"]["setuptools"]["package-dir"]
    return {folder: package for package, folder in mapping.items()}


def imported_name(module: str, folders: dict[str, str]) -> str:
    """``core.engine.runner`` -> ``imgclust.engine.runner``: the name mypy found from the
    folders, rewritten to the one Python imports (a file given besides them keeps its name)."""
    top, _, rest = module.partition(".")
    if top not in folders:
        return module
    return folders[top] + ("." + rest if rest else "")


def main(arguments: list[str]) -> int:
    """Check the package; print mypy's messages and summary; 0 when clean, 1 with errors."""
    folders = package_dirs()
    sources, options = process_options([*arguments, *folders])
    renamed = [
        BuildSource(s.path, imported_name(s.module, folders), None, s.base_dir) for s in sources
    ]
    try:
        messages = build.build(renamed, options).errors
    except CompileError as error:
        messages = error.messages
    for line in messages:
        print(line)
    errors = [m for m in messages if ": error:" in m]
    files = {m.split(":", 1)[0] for m in errors}
    if errors:
        checked = f"(checked {len(sources)} source files)"
        print(f"Found {len(errors)} errors in {len(files)} files {checked}")
        return 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
