"""The type check of .ci/run: mypy sees the package under the names Python imports it by, so a
project import is followed and checked rather than left unresolved, and the package passes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "typecheck.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("typecheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_folders_are_named_as_python_imports_them():
    script = load_script()
    folders = script.package_dirs()
    assert folders == {"core": "imgclust", "plugins": "imgclust.plugins"}
    assert script.imported_name("core", folders) == "imgclust"
    assert script.imported_name("core.engine.runner", folders) == "imgclust.engine.runner"
    assert script.imported_name("plugins.conv_ae", folders) == "imgclust.plugins.conv_ae"
    assert script.imported_name("planted", folders) == "planted"


@pytest.mark.slow
def test_the_package_type_checks_and_a_wrong_type_across_modules_fails(tmp_path):
    """The whole package passes; a call with a wrong argument type into another module is
    caught, which it would not be if project imports went unresolved."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from imgclust.stages.registry import qualified_name\n\nqualified_name('a', 2)\n"
    )
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(planted)], capture_output=True, text=True, cwd=ROOT
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 1, result.stdout[-3000:]
    assert len(errors) == 1, result.stdout[-3000:]
    assert errors[0].startswith(str(planted)) or "planted.py:3:" in errors[0]
    assert 'incompatible type "int"; expected "str"' in errors[0]
