"""The docs describe ``imgclust.testing``'s checks with the parameters the checks really take."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import imgclust.testing

ROOT = Path(__file__).parent.parent
CHECKS = ("check_dataset", "check_encoder", "check_clusterer", "check_refiner")
#: A call of a check in prose or code, with at most one level of nested brackets in it.
CALL = re.compile(r"\b(check_(?:dataset|encoder|clusterer|refiner))\(((?:[^()]|\([^()]*\))*)\)")


def documents() -> dict[str, str]:
    """Every page that may show a check: the README and docs/*.md."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return {page.name: page.read_text(encoding="utf-8") for page in pages}


def parameters(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(getattr(imgclust.testing, name)).parameters)


def table_signatures() -> dict[str, str]:
    """The first cell of each row of docs/plugins.md's table of checks: 'check_x(...)'."""
    page = documents()["plugins.md"]
    rows = re.findall(r"^\| `(check_\w+)\((.*?)\)` \|", page, flags=re.MULTILINE)
    return dict(rows)


def test_the_table_lists_every_check_with_its_whole_signature():
    """Each check's row names every parameter, in order, with its real default."""
    table = table_signatures()
    assert sorted(table) == sorted(CHECKS)
    for name, documented in table.items():
        real = list(parameters(name).values())
        written = [part.strip() for part in documented.split(",")]
        assert "*" in written, f"{name}: the keyword-only marker is missing"
        written.remove("*")
        assert len(written) == len(real), f"{name}: documented {written}, real {real}"
        for text, parameter in zip(written, real, strict=True):
            if parameter is real[0]:  # the stage itself: a class, factory or instance
                assert text == "factory", f"{name}: {text}"
                continue
            key, _, default = text.partition("=")
            assert key == parameter.name, f"{name}: {text} where {parameter.name} is"
            assert ast.literal_eval(default) == parameter.default, f"{name}: {text}"


def test_every_call_in_the_docs_uses_parameters_the_check_takes():
    """A keyword a page passes (tmp_path=..., fast=...) is one the check accepts."""
    calls = [
        (page, name, arguments)
        for page, text in documents().items()
        for name, arguments in CALL.findall(text)
    ]
    assert any("tmp_path=" in arguments for _, _, arguments in calls)  # the guide's example
    for page, name, arguments in calls:
        accepted = parameters(name)
        for keyword in re.findall(r"\b(\w+)=", re.sub(r"\{[^{}]*\}", "{}", arguments)):
            assert keyword in accepted, f"{page}: {name}({arguments}) passes {keyword}="


@pytest.mark.parametrize("name", ["check_encoder", "check_clusterer", "check_refiner"])
def test_the_checks_that_save_take_tmp_path(name):
    """The saving checks take pytest's tmp_path (the folder they save into); the dataset
    check saves nothing and takes none."""
    assert parameters(name)["tmp_path"].default is None
    assert "tmp_path" not in parameters("check_dataset")
