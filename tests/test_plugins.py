"""The plugin host: entry points, third-party plugins, broken ones, collisions, the registry."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from thirdparty import MEDIAN_CLUSTERER, make_distribution

from imgclust.errors import PluginError
from imgclust.stages.hookspecs import hookimpl
from imgclust.stages.host import PluginHost, get_host, reset_host

BUNDLED = {"digits", "arrays", "basic-encoders", "sklearn-clusterers", "recipes"}


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """Put a directory of fake installed distributions on sys.path; allow every plugin."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("IMGCLUST_LOAD_PLUGINS", raising=False)

    def install(dist: str, module: str, source: str, version: str = "1.0") -> None:
        make_distribution(root, dist, module, source, version)
        importlib.invalidate_caches()
        reset_host()

    yield install
    for name in list(sys.modules):
        if name.startswith("tp_"):
            del sys.modules[name]


def test_bundled_plugins_load_through_entry_points():
    host = get_host()
    assert BUNDLED <= set(host.plugins)
    assert all(host.plugins[name].bundled and not host.plugins[name].error for name in BUNDLED)
    registry = host.registry
    assert {"digits", "arrays"} <= set(registry.names("datasets"))
    assert {"flatten", "pca"} <= set(registry.names("encoders"))
    assert "kmeans" in registry.names("clusterers")
    assert {"article", "pixels-kmeans"} <= set(registry.names("recipes"))
    assert registry.get("encoders", "pca").plugin == "basic-encoders"


def test_third_party_plugin_loads_from_a_real_entry_point(third_party, cli, runs_dir):
    third_party("imgclust-median", "tp_median", MEDIAN_CLUSTERER)
    host = get_host()
    assert "median-split" in host.registry.names("clusterers")
    info = host.plugins["imgclust-median"]
    assert (info.distribution, info.version, info.bundled) == ("imgclust-median", "1.0", False)
    assert info.registered == {"clusterers": ["median-split"]}
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "pca",
        "--clusterer",
        "median-split",
        "--runs-dir",
        runs_dir,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["acc"] > 0.1
    assert "feature = 0" in (next(runs_dir.iterdir()) / "config.toml").read_text()


def test_load_plugins_variable_restricts_third_party_plugins(third_party, monkeypatch):
    third_party("imgclust-median", "tp_median", MEDIAN_CLUSTERER)
    monkeypatch.setenv("IMGCLUST_LOAD_PLUGINS", "")
    reset_host()
    host = get_host()
    assert "imgclust-median" not in host.plugins and BUNDLED <= set(host.plugins)
    monkeypatch.setenv("IMGCLUST_LOAD_PLUGINS", "imgclust-median, other")
    reset_host()
    assert "imgclust-median" in get_host().plugins


def test_broken_plugin_is_reported_and_the_rest_keep_working(third_party, cli):
    third_party("imgclust-broken", "tp_broken", "import no_such_module_anywhere\n")
    with pytest.warns(RuntimeWarning, match="imgclust-broken"):
        host = get_host()
    assert "ModuleNotFoundError" in host.plugins["imgclust-broken"].error
    assert "kmeans" in host.registry.names("clusterers")
    result = cli("plugins", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)["plugins"]}
    assert "no_such_module_anywhere" in rows["imgclust-broken"]["error"]


def test_plugin_failing_to_register_is_reported(third_party):
    source = (
        "from imgclust import hookimpl\n"
        "@hookimpl\n"
        "def register_encoders(register):\n"
        "    raise RuntimeError('boom')\n"
    )
    third_party("imgclust-badreg", "tp_badreg", source)
    with pytest.warns(RuntimeWarning, match="boom"):
        registry = get_host().registry
    assert "pca" in registry.names("encoders")
    assert "boom" in get_host().plugins["imgclust-badreg"].error


def test_a_hook_with_a_wrong_signature_is_reported_with_pluggy_s_reason(third_party):
    source = "from imgclust import hookimpl\n@hookimpl\ndef register_encoders(reg):\n    pass\n"
    third_party("imgclust-badsig", "tp_badsig", source)
    with pytest.warns(RuntimeWarning) as caught:
        get_host()
    message = " ".join(str(w.message) for w in caught if "imgclust-badsig" in str(w.message))
    assert "PluginValidationError" in message and "'reg'" in message and "hookspec" in message
    assert "\n" not in message


def test_a_hook_function_without_hookimpl_is_reported(third_party):
    source = "def register_encoders(register):\n    register('x', object)\n"
    third_party("imgclust-unmarked", "tp_unmarked", source)
    with pytest.warns(RuntimeWarning, match="defines register_encoders without @hookimpl"):
        host = get_host()
    assert "without @hookimpl" in host.plugins["imgclust-unmarked"].error
    assert "kmeans" in host.registry.names("clusterers")


KMEANS_TWIN = (
    MEDIAN_CLUSTERER.replace("median-split", "kmeans")
    + """

@hookimpl
def register_encoders(register):
    from imgclust.plugins.basic_encoders import FlattenEncoder
    register("raw", FlattenEncoder, summary="raw pixels under another name")


@hookimpl
def register_recipes(register):
    register("twin", {"dataset": "digits", "encoder": ["raw", "pca"], "clusterer": "kmeans"})
"""
)


def test_name_collision_disables_only_the_bare_name(third_party):
    third_party("imgclust-kmeans-too", "tp_collide", KMEANS_TWIN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = get_host().registry
    assert any("'imgclust-kmeans-too:kmeans'" in str(w.message) for w in caught)
    with pytest.raises(PluginError, match="both plugins") as error:
        registry.get("clusterers", "kmeans")
    message = str(error.value)
    assert "'sklearn-clusterers:kmeans'" in message and "'imgclust-kmeans-too:kmeans'" in message
    assert "\n" not in message
    assert registry.get("clusterers", "sklearn-clusterers:kmeans").plugin == "sklearn-clusterers"
    twin = registry.get("clusterers", "imgclust-kmeans-too:kmeans")
    assert (twin.plugin, twin.target.__name__) == ("imgclust-kmeans-too", "SplitByMedian")
    # the colliding plugin's other entries, and every other name, stay usable bare
    assert registry.get("encoders", "raw").plugin == "imgclust-kmeans-too"
    assert registry.get("recipes", "twin").plugin == "imgclust-kmeans-too"
    assert registry.get("clusterers", "gmm").plugin == "sklearn-clusterers"
    assert "kmeans" not in registry.names("clusterers")
    assert {"sklearn-clusterers:kmeans", "imgclust-kmeans-too:kmeans"} <= set(
        registry.names("clusterers")
    )


def test_every_name_is_reachable_qualified_by_its_plugin():
    registry = get_host().registry
    for kind in ("datasets", "encoders", "clusterers", "recipes", "refiners"):
        for name in registry.names(kind):
            entry = registry.get(kind, name)
            assert registry.get(kind, f"{entry.plugin}:{name}") is entry
    with pytest.raises(PluginError, match="Did you mean 'basic-encoders:pca'"):
        registry.get("encoders", "basic-encoder:pca")


def test_collision_shows_both_owners_and_qualified_names_run(third_party, cli, runs_dir):
    third_party("imgclust-kmeans-too", "tp_collide", KMEANS_TWIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = json.loads(cli("plugins", "--json").stdout)
    rows = {row["name"]: row for row in report["plugins"]}
    assert "kmeans" in rows["sklearn-clusterers"]["registers"]["clusterers"]
    assert rows["imgclust-kmeans-too"]["registers"]["clusterers"] == ["kmeans"]
    assert {
        "kind": "clusterer",
        "name": "kmeans",
        "plugins": ["imgclust-kmeans-too", "sklearn-clusterers"],
    } in report["collisions"]
    text = cli("plugins").stdout
    assert "imgclust-kmeans-too:kmeans" in text and "sklearn-clusterers:kmeans" in text
    bare = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "pca",
        "--clusterer",
        "kmeans",
        "--runs-dir",
        runs_dir,
    )
    assert bare.exit_code != 0 and "imgclust-kmeans-too:kmeans" in bare.stderr
    assert len(bare.stderr.strip().splitlines()) == 1
    for clusterer, expected in (
        ("imgclust-kmeans-too:kmeans", 2),
        ("sklearn-clusterers:kmeans", 10),
    ):
        result = cli(
            "run",
            "--dataset",
            "digits",
            "--encoder",
            "pca",
            "--clusterer",
            clusterer,
            "--runs-dir",
            runs_dir,
            "--json",
            "--no-plots",
        )
        assert result.exit_code == 0, result.stderr
        assert len(json.loads(result.stdout)["clusters"]) == expected
    # the colliding plugin's recipe means its own kmeans, and still runs
    result = cli("run", "--recipe", "twin", "--runs-dir", runs_dir, "--json", "--no-plots")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["clusters"]) == 2
    listed = cli("list", "clusterers", "--json")
    names = {item["name"] for item in json.loads(listed.stdout)}
    assert {"imgclust-kmeans-too:kmeans", "sklearn-clusterers:kmeans"} <= names


def test_misspelled_hook_is_a_load_failure():
    @hookimpl
    def register_encoder(register):  # misspelled on purpose
        pass

    host = PluginHost()
    with pytest.raises(Exception, match="unknown hook"):
        host.register(SimpleNamespace(register_encoder=register_encoder), "typo")
        host.pm.check_pending()


def test_registered_names_are_validated():
    @hookimpl
    def register_encoders(register):
        register("Bad Name", lambda: None)

    host = PluginHost()
    host.register(SimpleNamespace(register_encoders=register_encoders), "badname")
    with pytest.warns(RuntimeWarning, match="lowercase"):
        assert "Bad Name" not in host.registry.names("encoders")


def test_unknown_names_suggest_the_nearest(registry):
    with pytest.raises(PluginError, match="Did you mean 'pca'"):
        registry.get("encoders", "pcaa")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["plugins"], ["list", "encoders"]])
def test_light_commands_import_no_heavy_library(argv):
    code = (
        "import sys\n"
        "from imgclust.cli.app import main\n"
        f"sys.argv = ['imgclust'] + {argv!r}\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('tensorflow', 'keras', 'umap', 'numba', 'hdbscan', 'torch', 'matplotlib')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    env = {**os.environ, "IMGCLUST_LOAD_PLUGINS": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_the_guide_s_example_plugin_works(third_party, cli, runs_dir):
    """The plugin in docs/plugins.md, installed through its entry point, clusters digits."""
    guide = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    source = (
        guide.split("`imgclust_median.py` implements one hook")[1]
        .split("```python\n")[1]
        .split("```")[0]
    )
    third_party("median", "tp_guide_median", source)
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--encoder",
        "pca",
        "--clusterer",
        "median-split",
        "--set",
        "clusterer.feature=1",
        "--runs-dir",
        runs_dir,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    folder = Path(json.loads(result.stdout)["run"])
    assert "feature = 1" in (folder / "config.toml").read_text()
    assert (
        len(
            {row.split(",")[1] for row in (folder / "assignments.csv").read_text().splitlines()[1:]}
        )
        == 2
    )


def test_cli_reference_is_current():
    """docs/cli.md is generated from the CLI; regenerate it with python docs/cli_reference.py."""
    import importlib.util

    path = Path(__file__).parent.parent / "docs" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TARGET.read_text() == module.render(), "run: python docs/cli_reference.py"


# Hooks are called through pluggy, one plugin at a time --------------------------------------
def test_hookimpls_may_take_a_subset_of_the_arguments(third_party, cli):
    """pluggy passes each implementation only the arguments it names, none at all included."""
    source = (
        "from imgclust import hookimpl\n"
        "CALLED = []\n"
        "@hookimpl\n"
        "def register_commands():\n"
        "    CALLED.append('commands')\n"
        "@hookimpl\n"
        "def register_recipes():\n"
        "    CALLED.append('recipes')\n"
    )
    third_party("imgclust-quiet", "tp_quiet", source)
    host = get_host()
    assert "pixels-kmeans" in host.registry.names("recipes")
    assert cli("plugins", "--json").exit_code == 0
    assert sys.modules["tp_quiet"].CALLED == ["recipes", "commands"]
    assert not host.plugins["imgclust-quiet"].error


def test_a_hookspec_that_grows_an_argument_still_calls_old_implementations():
    """A spec gaining an argument (as llm's register_models did) keeps older plugins working."""
    import pluggy

    from imgclust.stages.hookspecs import hookspec

    class GrownSpecs:
        @hookspec
        def register_encoders(self, register, aliases):
            """register_encoders as it might look after growing ``aliases``."""

    seen = []

    class OldPlugin:
        @hookimpl
        def register_encoders(self, register):
            seen.append(("old", register))

    class NewPlugin:
        @hookimpl
        def register_encoders(self, register, aliases):
            seen.append(("new", register, aliases))

    host = PluginHost()
    host.pm = pluggy.PluginManager("imgclust")
    host.pm.add_hookspecs(GrownSpecs)
    host.register(OldPlugin(), "old")
    host.register(NewPlugin(), "new")
    results = list(
        host.call_each("register_encoders", lambda p: {"register": p, "aliases": {}}, set)
    )
    assert sorted((plugin, error) for plugin, error, _ in results) == [("new", None), ("old", None)]
    assert sorted(seen, key=str) == [("new", "new", {}), ("old", "old")]


def test_a_raising_hook_is_reported_against_its_plugin_only(third_party):
    third_party(
        "imgclust-aaa-bad",
        "tp_aaa_bad",
        "from imgclust import hookimpl\n"
        "@hookimpl\n"
        "def register_encoders():\n"
        "    raise KeyError('oops')\n",
    )
    third_party(
        "imgclust-zzz-good",
        "tp_zzz_good",
        "from imgclust import hookimpl\n"
        "class Same:\n"
        "    '''Returns its input.'''\n"
        "@hookimpl\n"
        "def register_encoders(register):\n"
        "    register('same', Same)\n",
    )
    with pytest.warns(RuntimeWarning, match="imgclust-aaa-bad.*KeyError"):
        registry = get_host().registry
    plugins = get_host().plugins
    assert "KeyError: 'oops'" in plugins["imgclust-aaa-bad"].error
    assert not plugins["imgclust-zzz-good"].error
    assert registry.get("encoders", "same").plugin == "imgclust-zzz-good"
    assert "pca" in registry.names("encoders")


# Plugin commands --------------------------------------------------------------------------
COMMANDS_PLUGIN = """
import typer
from imgclust import hookimpl


@hookimpl
def register_commands(app):
    @app.command("list")
    def hijack():
        print("HIJACKED")

    @app.command()
    def hello_there():
        print("hello from a plugin")

    tools = typer.Typer()

    @tools.command()
    def count():
        print("counted")

    app.add_typer(tools, name="tools")
"""

SECOND_COMMANDS_PLUGIN = """
from imgclust import hookimpl


@hookimpl
def register_commands(app):
    @app.command("hello-there")
    def other():
        print("the second plugin")
"""


def test_plugin_commands_are_added_but_never_replace_a_command(third_party, cli):
    third_party("imgclust-cmds", "tp_cmds", COMMANDS_PLUGIN)
    third_party("imgclust-more-cmds", "tp_more_cmds", SECOND_COMMANDS_PLUGIN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = cli("list", "encoders", "--json")
    messages = [str(w.message) for w in caught]
    assert listed.exit_code == 0 and "HIJACKED" not in listed.stdout
    assert "pca" in {item["name"] for item in json.loads(listed.stdout)}
    assert any("'list'" in m and "imgclust-cmds" in m and "built-in" in m for m in messages)
    assert any(
        "'hello-there'" in m and "imgclust-more-cmds" in m and "imgclust-cmds" in m
        for m in messages
    )
    assert all(len(m.splitlines()) == 1 for m in messages)
    hello = cli("hello-there")
    assert (hello.exit_code, hello.stdout) == (0, "hello from a plugin\n")
    assert cli("tools", "count").stdout == "counted\n"

    report = json.loads(cli("plugins", "--json").stdout)
    rows = {row["name"]: row for row in report["plugins"]}
    assert rows["imgclust-cmds"]["commands"] == ["hello-there", "tools"]
    assert rows["imgclust-more-cmds"]["commands"] == []
    clashes = [c for c in report["collisions"] if c["kind"] == "command"]
    assert {"kind": "command", "name": "list", "plugins": ["built-in", "imgclust-cmds"]} in clashes
    assert {
        "kind": "command",
        "name": "hello-there",
        "plugins": ["imgclust-cmds", "imgclust-more-cmds"],
    } in clashes
    table = cli("plugins").stdout
    assert "commands: hello-there, tools" in table and "refused" in table


def test_plugin_commands_go_with_their_host(third_party, cli):
    """Loading plugins again (another set of them) leaves no command of the last set behind."""
    third_party("imgclust-cmds", "tp_cmds", COMMANDS_PLUGIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli("hello-there").exit_code == 0
        reset_host()
        os.environ["IMGCLUST_LOAD_PLUGINS"] = ""
        try:
            gone = cli("hello-there")
        finally:
            del os.environ["IMGCLUST_LOAD_PLUGINS"]
    assert gone.exit_code != 0 and "hello from a plugin" not in gone.stdout


def test_refused_command_warning_is_one_line_in_a_real_process(tmp_path):
    make_distribution(tmp_path, "imgclust-cmds", "tp_cmds_proc", COMMANDS_PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("IMGCLUST_LOAD_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-m", "imgclust", "list", "recipes"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "HIJACKED" not in done.stdout and "article" in done.stdout
    assert done.stderr.strip().splitlines() == [
        "warning: imgclust: command 'list' of plugin 'imgclust-cmds' would replace the built-in "
        "one; ignored (the plugin should rename it)."
    ]


# Errors at stage boundaries name the stage and its plugin ----------------------------------
FAULTY_STAGES = """
import numpy as np
from imgclust import hookimpl
from imgclust.errors import DataError


class Hog:
    '''An encoder that misbehaves as its ``fault`` setting says.'''

    def __init__(self, fault: str = "none") -> None:
        self.fault = fault

    def fit(self, images, validation=None):
        if self.fault == "fit":
            raise ValueError("cannot fit\\nsecond line")
        return self

    def transform(self, images):
        x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)[:, 18:24]
        if self.fault == "raise":
            return {}["missing"]
        if self.fault == "short":
            return x[:-1]
        if self.fault == "flat":
            return x[:, 0]
        if self.fault == "none-out":
            return None
        if self.fault == "nan":
            x[3, 1] = np.nan
        if self.fault == "data":
            raise DataError("needs colour images")
        return x

    def save(self, directory):
        pass

    def load(self, directory):
        return self


class Odd:
    '''A clusterer that misbehaves as its ``fault`` setting says.'''

    def __init__(self, fault: str = "none") -> None:
        self.fault = fault

    def fit_predict(self, features):
        score = features.sum(axis=1)
        labels = (score > np.median(score)).astype("int64")
        if self.fault == "short":
            return labels[:-3]
        if self.fault == "2d":
            return labels[:, None]
        if self.fault == "nan":
            return np.where(labels == 1, np.nan, 0.0)
        if self.fault == "negative":
            return labels - 5
        if self.fault == "text":
            return np.array(["a"] * len(labels))
        if self.fault == "raise":
            raise IndexError("index 7 is out of bounds")
        return labels

    def save(self, directory):
        pass

    def load(self, directory):
        return self


@hookimpl
def register_encoders(register):
    register("hog", Hog)


@hookimpl
def register_clusterers(register):
    register("odd", Odd)
"""

STAGE_FAULTS = {
    "encoder raises": (
        "encoder.fault=raise",
        "encoder 'hog' from acme-imgclust 0.2 failed: KeyError: 'missing'",
    ),
    "encoder fit raises": (
        "encoder.fault=fit",
        "encoder 'hog' from acme-imgclust 0.2 failed: ValueError: cannot fit",
    ),
    "encoder's own error": ("encoder.fault=data", "encoder 'hog': needs colour images"),
    "N-1 rows": ("encoder.fault=short", "encoder 'hog' returned 1796 rows for 1797 images"),
    "1-D features": (
        "encoder.fault=flat",
        "encoder 'hog' from acme-imgclust 0.2 returned shape (1797,)",
    ),
    "None features": ("encoder.fault=none-out", "encoder 'hog' from acme-imgclust 0.2 returned"),
    "NaN features": ("encoder.fault=nan", "encoder 'hog' from acme-imgclust 0.2 have NaN"),
    "N-3 labels": (
        "clusterer.fault=short",
        "clusterer 'odd' returned 1794 labels for 1797 images",
    ),
    "2-D labels": ("clusterer.fault=2d", "clusterer 'odd' from acme-imgclust 0.2 returned labels"),
    "NaN labels": ("clusterer.fault=nan", "not whole numbers"),
    "labels below -1": ("clusterer.fault=negative", "returned label -5"),
    "text labels": ("clusterer.fault=text", "expected integers"),
    "clusterer raises": (
        "clusterer.fault=raise",
        "clusterer 'odd' from acme-imgclust 0.2 failed: IndexError: index 7 is out of bounds",
    ),
}


@pytest.mark.parametrize("case", list(STAGE_FAULTS))
def test_a_failing_stage_is_named_with_its_plugin(case, third_party, cli, runs_dir):
    third_party("acme-imgclust", "tp_acme", FAULTY_STAGES, version="0.2")
    setting, expected = STAGE_FAULTS[case]
    result = cli(
        *("run", "--dataset", "digits", "--encoder", "hog", "--clusterer", "odd"),
        *("--set", setting, "--runs-dir", runs_dir, "--no-plots"),
    )
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and expected in last, result.stderr
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert sum(line.startswith("Error") for line in result.stderr.splitlines()) == 1


def test_stage_failures_keep_the_original_exception(third_party, monkeypatch):
    """The one-line error's cause is the plugin's exception; IMGCLUST_DEBUG lets it through."""
    import numpy as np

    from imgclust.engine.pipeline import Pipeline
    from imgclust.engine.stage import Stage

    third_party("acme-imgclust", "tp_acme", FAULTY_STAGES, version="0.2")
    registry = get_host().registry
    hog = registry.get("encoders", "hog").target
    odd = registry.get("clusterers", "odd").target
    images = np.zeros((20, 8, 8, 1), dtype=np.uint8)

    def pipeline() -> Pipeline:
        return Pipeline([Stage("hog", hog(fault="raise"))], Stage("odd", odd()))

    with pytest.raises(PluginError, match="encoder 'hog' from acme-imgclust 0.2 failed") as info:
        pipeline().fit(images)
    assert isinstance(info.value.__cause__, KeyError)
    monkeypatch.setenv("IMGCLUST_DEBUG", "1")
    with pytest.raises(KeyError) as raw:
        pipeline().fit(images)
    assert "encoder 'hog' from acme-imgclust 0.2 failed" in "".join(raw.value.__notes__)


def test_a_stage_built_by_hand_is_not_credited_to_a_registered_plugin(third_party):
    """A hand-made stage that shares a registered name is not blamed on that plugin."""
    import numpy as np

    from imgclust.engine.pipeline import Pipeline
    from imgclust.engine.stage import Stage

    third_party("acme-imgclust", "tp_acme", FAULTY_STAGES, version="0.2")
    assert "hog" in get_host().registry.names("encoders")

    class Mine:
        def fit(self, images, validation=None):
            return self

        def transform(self, images):
            raise RuntimeError("mine")

    with pytest.raises(PluginError, match=r"^encoder 'hog' failed: RuntimeError: mine$"):
        Pipeline([Stage("hog", Mine())], Stage("odd", None)).fit_encoders(np.zeros((3, 2, 2, 1)))


def test_plugin_objects_that_cannot_be_hashed_are_called_one_at_a_time_too():
    """An unhashable namespace plugin beside the bundled modules works, and fails alone."""
    calls = []

    @hookimpl
    def register_encoders(register):
        register("same", lambda: None)

    @hookimpl
    def register_recipes():
        calls.append("recipes")
        raise RuntimeError("broken recipes")

    host = get_host()
    host.register(SimpleNamespace(register_encoders=register_encoders), "ns-encoders")
    host.register(SimpleNamespace(register_recipes=register_recipes), "ns-recipes")
    with pytest.warns(RuntimeWarning, match="ns-recipes.*broken recipes"):
        registry = host.registry
    assert {"same", "pca"} <= set(registry.names("encoders"))
    assert "article" in registry.names("recipes") and calls == ["recipes"]
    assert registry.get("encoders", "same").plugin == "ns-encoders"


def test_set_reaches_a_qualified_stage_by_its_bare_name():
    from imgclust.engine.config import apply_sets

    config = {"encoder": [{"name": "basic-encoders:flatten"}, {"name": "basic-encoders:pca"}]}
    result = apply_sets(config, ["encoder.pca.n_components=5"])
    assert result["encoder"][1] == {"name": "basic-encoders:pca", "n_components": "5"}
