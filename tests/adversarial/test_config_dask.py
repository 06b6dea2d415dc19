"""A run folder's config is data: the Dask address in a config file is joined only when the
user says so on the command line (``--dask ADDRESS`` or ``--trust``), never by ``run --config``
or ``run --resume`` alone, nor by ``imgclust.run(config=...)``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adversarial.listeners import raw_server

pytest.importorskip("distributed", reason='needs the dask extra: pip install "imgclust[dask]"')


def with_dask(config: Path, address: str, target: Path) -> Path:
    """``config`` copied to ``target`` with a ``dask`` address put in front of its tables."""
    target.write_text(f'dask = "{address}"\n' + config.read_text(encoding="utf-8"))
    return target


def imgclust(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The console script in a process of its own, as a user runs it."""
    env = {**os.environ, "IMGCLUST_LOAD_PLUGINS": ""}
    return subprocess.run(
        [sys.executable, "-m", "imgclust", *map(str, args)],
        capture_output=True, text=True, check=False, timeout=timeout, env=env,
    )  # fmt: skip


def ignored_line(source: Path, address: str) -> str:
    return (
        f"warning: {source} names the Dask scheduler {address!r}, which was ignored: the run goes "
        f"on in this process; to use it, pass --dask {address!r} (or --trust for a config file "
        "you trust)."
    )


def test_run_config_and_resume_never_join_the_dask_address_in_process(pristine_run, tmp_path, cli):
    from imgclust.engine.config import ConfigDaskIgnoredWarning

    folder = tmp_path / "runs" / f"{pristine_run.name}.incomplete"
    shutil.copytree(pristine_run, folder)
    (folder / "metrics.json").unlink()
    with raw_server(lifetime=20) as scheduler:
        config = with_dask(pristine_run / "config.toml", scheduler.address, tmp_path / "c.toml")
        with_dask(pristine_run / "config.toml", scheduler.address, folder / "config.toml")
        with pytest.warns(ConfigDaskIgnoredWarning, match="which was ignored"):
            repeated = cli("run", "--config", config, "--runs-dir", tmp_path / "new", "--no-plots")
        with pytest.warns(ConfigDaskIgnoredWarning, match="which was ignored"):
            resumed = cli("run", "--resume", folder, "--no-plots")
        assert scheduler.accepted == 0
    assert repeated.exit_code == 0, repeated.stderr
    assert resumed.exit_code == 0, resumed.stderr
    assert (tmp_path / "runs" / pristine_run.name).is_dir()


@pytest.mark.slow
def test_run_config_of_a_run_folder_never_joins_its_dask_address(pristine_run, tmp_path):
    with raw_server(lifetime=20) as scheduler:
        config = with_dask(pristine_run / "config.toml", scheduler.address, tmp_path / "c.toml")
        result = imgclust(
            "run", "--config", config, "--runs-dir", tmp_path / "runs", "--no-plots", "--json"
        )
        assert scheduler.accepted == 0
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [ignored_line(config, scheduler.address)]
    assert "dask" not in (Path(json.loads(result.stdout)["run"]) / "config.toml").read_text()


@pytest.mark.slow
def test_run_resume_never_joins_the_dask_address_of_the_folder(pristine_run, tmp_path):
    folder = tmp_path / "runs" / f"{pristine_run.name}.incomplete"
    shutil.copytree(pristine_run, folder)
    (folder / "metrics.json").unlink()
    with raw_server(lifetime=20) as scheduler:
        with_dask(pristine_run / "config.toml", scheduler.address, folder / "config.toml")
        result = imgclust("run", "--resume", folder, "--no-plots", "--json")
        assert scheduler.accepted == 0
    assert result.returncode == 0, result.stderr
    assert ignored_line(folder / "config.toml", scheduler.address) in result.stderr.splitlines()
    assert not folder.exists() and (tmp_path / "runs" / pristine_run.name).is_dir()


def test_the_python_api_needs_an_explicit_argument_for_a_config_files_dask(pristine_run, tmp_path):
    import imgclust
    from imgclust.engine.config import ConfigDaskIgnoredWarning

    with raw_server(reply=b"\xff" * 64, lifetime=20) as scheduler:
        config = with_dask(pristine_run / "config.toml", scheduler.address, tmp_path / "c.toml")
        with pytest.warns(ConfigDaskIgnoredWarning, match="which was ignored"):
            run = imgclust.run(config=config, runs_dir=tmp_path / "runs")
        assert scheduler.accepted == 0
        assert run.metrics["n_images"] == 300
        with pytest.raises(imgclust.ImgclustError, match="is not a Dask scheduler"):
            imgclust.run(config=config, runs_dir=tmp_path / "trusted", trust_config=True)
        assert scheduler.accepted == 1
    assert not (tmp_path / "trusted").exists() or not any((tmp_path / "trusted").iterdir())


def test_the_command_lines_dask_replaces_the_config_files_without_a_word(pristine_run, tmp_path):
    from imgclust.engine.config import resolve_config
    from imgclust.stages.host import get_registry

    config = with_dask(pristine_run / "config.toml", "tcp://127.0.0.1:1", tmp_path / "c.toml")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolved = resolve_config(get_registry(), config_file=config, sets=[("dask", "local:2")])
        trusted = resolve_config(get_registry(), config_file=config, trust_config=True)
    assert resolved["dask"] == "local:2"
    assert trusted["dask"] == "tcp://127.0.0.1:1"


@pytest.mark.slow
def test_sweep_k_from_a_run_folder_never_joins_its_dask_address(pristine_run, tmp_path):
    run = tmp_path / pristine_run.name
    shutil.copytree(pristine_run, run)
    with raw_server(lifetime=20) as scheduler:
        with_dask(pristine_run / "config.toml", scheduler.address, run / "config.toml")
        result = imgclust(
            "sweep-k", "--from", run, "--k", "2,3", "--sample", "200", "--run", "--no-plots",
            "--runs-dir", tmp_path / "runs", "--json",
        )  # fmt: skip
        assert scheduler.accepted == 0
    assert result.returncode == 0, result.stderr
    assert "which was ignored" in result.stderr
    assert Path(json.loads(result.stdout)["folder"]).is_dir()
