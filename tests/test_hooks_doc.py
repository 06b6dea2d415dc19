"""docs/hooks.md: generated from the hook specs and interfaces, current, and its examples work."""

from __future__ import annotations

import importlib.util
import json
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from imgclust.stages import hookspecs, interfaces
from imgclust.stages.host import PluginHost, get_host

DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(scope="module")
def reference():
    """docs/hooks_reference.py, the generator, imported as a module."""
    spec = importlib.util.spec_from_file_location("hooks_reference", DOCS / "hooks_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hook_section(page: str, hook: str) -> str:
    """The part of the page about one hook."""
    return page.split(f"### `{hook}(")[1].split("\n### ")[0].split("\n## ")[0]


def example(page: str, hook: str) -> str:
    """The Python example in one hook's section."""
    return hook_section(page, hook).split("```python\n")[1].split("```")[0]


def test_hooks_md_is_current(reference):
    """docs/hooks.md is generated; regenerate it with python docs/hooks_reference.py."""
    assert reference.TARGET.read_text() == reference.render(), "run: python docs/hooks_reference.py"


def test_every_hook_and_interface_is_documented(reference):
    page = reference.render()
    hooks = PluginHost().pm.hook
    specs = [name for name in vars(hooks) if getattr(getattr(hooks, name), "spec", None)]
    assert len(specs) >= 5
    for name in specs:
        section = hook_section(page, name)
        assert "Arguments:" in section and "```python" in section, name
        assert f"def {name}(" in example(page, name), name
    protocols = [
        name
        for name, value in vars(interfaces).items()
        if isinstance(value, type)
        and getattr(value, "_is_protocol", False)
        and value.__module__ == interfaces.__name__
    ]
    assert {"Dataset", "Encoder", "Clusterer"} <= set(protocols)
    for name in [*protocols, "ImageSet"]:
        assert f"### `{name}`" in page, name
    assert "- `fit(images: np.ndarray, validation: np.ndarray | None = None) -> Encoder`" in page


def test_new_protocols_are_picked_up_without_listing_them(reference):
    """A capability protocol added to the interfaces module appears on the page by itself."""
    fake = types.ModuleType("fake_interfaces")

    class Reconstructs(Protocol):
        """Restores images from their codes."""

        def reconstruct(self, images: int, scale: float = 1.0) -> str:
            """The images restored."""

    @dataclass
    class Box:
        """A container."""

        size: int = 3

    class Helper:  # neither a protocol nor a dataclass: not an interface
        pass

    for cls in (Reconstructs, Box, Helper):
        cls.__module__ = fake.__name__
        setattr(fake, cls.__name__, cls)
    fake.Imported = interfaces.Encoder  # defined elsewhere: left out
    found = reference.interface_classes(fake)
    assert found == [Reconstructs, Box]
    text = reference.render_class(Reconstructs)
    assert "### `Reconstructs`" in text and "Restores images" in text
    assert "- `reconstruct(images: int, scale: float = 1.0) -> str`: The images restored." in text
    assert "- `size: int = 3`" in reference.render_class(Box)


def test_rest_markup_becomes_markdown_but_code_blocks_stay(reference):
    text = "Uses ``x`` and :class:`imgclust.Y`.\n\n```python\nprint('``raw``')\n```\n"
    assert reference.markdown(text) == (
        "Uses `x` and `imgclust.Y`.\n\n```python\nprint('``raw``')\n```"
    )


def test_the_examples_on_the_page_work(reference, cli, runs_dir):
    """Each hook's example, installed as a plugin, registers what it says and runs."""
    page = reference.render()
    host = get_host()
    for hook in [name for name, _ in reference.hook_specs(hookspecs)]:
        module = types.ModuleType(f"example_{hook}")
        exec(compile(example(page, hook), f"<{hook} example>", "exec"), module.__dict__)
        host.register(module, f"example-{hook.removeprefix('register_')}")
    registry = host.registry
    for kind, name in [
        ("datasets", "noise"),
        ("encoders", "row-means"),
        ("clusterers", "birch"),
        ("recipes", "digits-pca-gmm"),
    ]:
        assert name in registry.names(kind), (kind, name)
        assert not host.plugins[f"example-{kind}"].error

    stages = ("--dataset", "noise", "--encoder", "row-means", "--clusterer", "birch")
    result = cli(
        "run",
        *stages,
        "--set",
        "clusterer.n_clusters=3",
        "--runs-dir",
        runs_dir,
        "--no-plots",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["n_images"] == 100 and record["feature_dim"] == 16
    result = cli("run", "--recipe", "digits-pca-gmm", "--runs-dir", runs_dir, "--no-plots")
    assert result.exit_code == 0, result.stderr
    hello = cli("hello", "plugin")
    assert (hello.exit_code, hello.stdout) == (0, "hello plugin\n")
    assert "example-commands" in re.findall(r"example-\w+", cli("plugins").stdout)
