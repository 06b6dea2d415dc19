"""Fuzzing the parsers of untrusted input: every input either works or raises ImgclustError
(a one-line error), never another exception. Each test is bounded to stay fast."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgclust.errors import ImgclustError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KEYS = st.sampled_from(
    ["seed", "split", "fit_split", "dataset", "encoder", "encoders", "clusterer", "name",
     "limit", "n_clusters", "n_components", "path", "size", "recipe", "x", ""]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["digits", "pca", "kmeans", "flatten", "arrays", "none", "8x8", "-1"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)


def _toml_scalar(value) -> str:
    from imgclust.engine.config import _toml_value

    return _toml_value(value)


TOML_LINES = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", KEYS, SCALARS.map(lambda v: _safe(v))),
    st.sampled_from(
        ["[dataset]", "[[encoder]]", "[clusterer]", "[dataset.x]", "[[dataset]]", "encoder = 'pca'",
         "name = 'digits'", "name = 'kmeans'", "limit = -5", "n_clusters = 0", "seed = 1e400",
         "size = [0, 3]", "size = '100000x100000'", "encoder = []", "clusterer = 3"]
    ),
    st.text(max_size=30),
)  # fmt: skip


def _safe(value) -> str:
    """A TOML value, or garbage when the writer cannot write it (the parser must cope too)."""
    try:
        return _toml_scalar(value)
    except ImgclustError:
        return "???"


def registry():
    from imgclust.stages.host import get_registry

    return get_registry()


# Config files ------------------------------------------------------------------------------
@FUZZ
@given(lines=st.lists(TOML_LINES, max_size=12))
def test_config_text_fuzz(lines: list[str]):
    from imgclust.engine.config import normalise, read_toml, validate

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        try:
            validate(registry(), normalise(read_toml(path), str(path)))
        except ImgclustError:
            pass


@FUZZ
@given(data=st.binary(max_size=200))
def test_config_bytes_fuzz(data: bytes):
    from imgclust.engine.config import normalise, read_toml, validate

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_bytes(b"[dataset]\nname='digits'\n" + data)
        try:
            validate(registry(), normalise(read_toml(path), str(path)))
        except ImgclustError:
            pass


@FUZZ
@given(config=st.dictionaries(KEYS, JSON, max_size=6))
def test_config_mapping_fuzz(config: dict):
    from imgclust.engine.config import normalise, validate

    base = {"dataset": "digits", "encoder": "pca", "clusterer": "kmeans"}
    try:
        validate(registry(), normalise({**base, **config}, "fuzz"))
    except ImgclustError:
        pass


# --set -------------------------------------------------------------------------------------
SET_TARGETS = st.sampled_from(
    ["seed", "split", "dataset.limit", "dataset.x", "encoder.n_components", "encoder.0.whiten",
     "encoder.pca.n_components", "encoder.9.x", "clusterer.n_clusters", "clusterer.seed",
     "clusterer", "a.b.c", "", ".", "encoder..x", "dataset.name", "encoder.name"]
)  # fmt: skip


@FUZZ
@given(
    sets=st.lists(
        st.one_of(
            st.builds(lambda t, v: f"{t}={v}", SET_TARGETS, st.text(max_size=12)),
            st.text(max_size=24),
        ),
        max_size=5,
    )
)
def test_set_fuzz(sets: list[str]):
    from imgclust.engine.config import resolve_config

    try:
        resolve_config(
            registry(), dataset="digits", encoders=["pca"], clusterer="kmeans", sets=sets
        )
    except ImgclustError:
        pass


# Manifests ---------------------------------------------------------------------------------
def _manifest_fields() -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {},
        optional={
            "format": st.sampled_from(["imgclust-pipeline", "x"]) | JSON,
            "format_version": st.sampled_from([1, 0, 99, True, "1"]) | JSON,
            "encoders": JSON,
            "clusterer": JSON,
            "input": JSON,
            "can_predict": JSON,
        },
    )


@FUZZ
@given(changes=_manifest_fields(), drop=st.lists(st.text(max_size=12), max_size=3))
def test_manifest_fuzz(pristine_run: Path, changes: dict, drop: list[str]):
    from imgclust.engine.manifest import read_manifest
    from imgclust.engine.pipeline import load_pipeline

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(pristine_run, run)
        manifest_file = run / "pipeline" / "manifest.json"
        manifest = json.loads(manifest_file.read_text())
        for key in drop:
            manifest.pop(key, None)
        manifest.update(changes)
        manifest_file.write_text(json.dumps(manifest, allow_nan=True))
        try:
            read_manifest(run)
            load_pipeline(run, registry=registry())
        except ImgclustError:
            pass


@FUZZ
@given(text=st.binary(max_size=300))
def test_manifest_bytes_fuzz(pristine_run: Path, text: bytes):
    from imgclust.engine.pipeline import load_pipeline

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(pristine_run / "pipeline", run / "pipeline")
        (run / "pipeline" / "manifest.json").write_bytes(text)
        try:
            load_pipeline(run, registry=registry())
        except ImgclustError:
            pass


# Arrays ------------------------------------------------------------------------------------
DTYPES = st.sampled_from(["|u1", "|b1", "<i2", "<i8", ">u4", "<f2", "<f4", "<f8", "<c8", "|O",
                          "<U3", "|V4", "<M8[s]", "[('a', '<i4')]", "bogus", "<f4 "])  # fmt: skip
SHAPES = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=12), max_size=5).map(tuple),
    st.lists(st.integers(min_value=-(2**63), max_value=2**64), max_size=5).map(tuple),
)


def npy_file(descr: str, shape: tuple, fortran: bool, payload: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode("latin1")
    header += b" " * ((-len(header) - 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + payload


NPY = st.one_of(
    st.builds(npy_file, DTYPES, SHAPES, st.booleans(), st.binary(max_size=600)),
    st.binary(max_size=200),
    st.builds(
        lambda a: (lambda b: (np.save(b, a), b.getvalue())[1])(io.BytesIO()),
        st.sampled_from(
            [np.zeros((3, 4, 4), np.uint8), np.ones((2, 3, 5, 5), np.float32),
             np.full((2, 4, 4), 300, np.int32), np.full((2, 4, 4), np.nan), np.zeros((0, 4, 4)),
             np.zeros((3, 0, 4), np.uint8), np.zeros(5), np.zeros(()), np.zeros((2, 3, 3, 7))]
        ),
    ),
)  # fmt: skip


@FUZZ
@given(data=NPY, truncate=st.integers(min_value=0, max_value=700))
def test_npy_fuzz(data: bytes, truncate: int):
    from imgclust.plugins.arrays import ArraysDataset

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npy"
        path.write_bytes(data[: max(truncate, len(data) // 2)])
        try:
            ArraysDataset(str(path)).load().validate()
        except ImgclustError:
            pass


@FUZZ
@given(
    members=st.dictionaries(
        st.sampled_from(["x", "y", "images", "labels", "z", "x/y"]), NPY, max_size=3
    ),
    compressed=st.booleans(),
    junk=st.binary(max_size=40),
)
def test_npz_fuzz(members: dict, compressed: bool, junk: bytes):
    from imgclust.plugins.arrays import ArraysDataset

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npz"
        method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        with zipfile.ZipFile(path, "w", method) as archive:
            for name, data in members.items():
                archive.writestr(f"{name}.npy", data)
        if junk:
            raw = bytearray(path.read_bytes())
            start = len(raw) // 3
            raw[start : start + len(junk)] = junk
            path.write_bytes(bytes(raw))
        try:
            ArraysDataset(str(path)).load().validate()
        except ImgclustError:
            pass
