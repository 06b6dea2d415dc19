"""Bounded reads: every ``.npz`` member and zip member imgclust reads from a run folder is
checked against its declared and inflated size before it is read, and read once."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imgclust.errors import DataError, ImgclustError

MIB = 2**20


def deflated_member(archive: zipfile.ZipFile, name: str, header: dict | None, size: int) -> None:
    """Write ``name`` into ``archive`` compressed: an optional ``.npy`` header, then ``size``
    bytes that compress to almost nothing (spaces)."""
    with archive.open(name, "w", force_zip64=True) as handle:
        if header is not None:
            np.lib.format.write_array_header_1_0(handle, header)
        block = b" " * MIB
        left = size
        while left:
            handle.write(block[: min(left, MIB)])
            left -= min(left, MIB)


def pca_state(run: Path) -> Path:
    (path,) = (run / "pipeline").glob("encoder-*-pca/pca.npz")
    return path


def rewrite_pca(path: Path, components: tuple[int, int], compressed: bool) -> None:
    """pca.npz with the run's own small members and a ``components_`` of the given shape."""
    with np.load(path) as state:
        kept = {key: state[key] for key in state.files if key != "components_"}
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        for key, value in kept.items():
            with archive.open(f"{key}.npy", "w") as handle:
                np.lib.format.write_array(handle, value)
        header = {"descr": "<f4", "fortran_order": False, "shape": components}
        deflated_member(archive, "components_.npy", header, components[0] * components[1] * 4)


def peak_while(action) -> tuple[int, BaseException | None]:
    """The peak of memory traced while ``action`` runs, and what it raised."""
    tracemalloc.start()
    raised = None
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


def test_a_pca_npz_bomb_is_refused_before_it_is_inflated(run_copy):
    """A member of under a megabyte that inflates to 320 MiB (it was read three times: 2.1 GB
    from a 0.97 MB file)."""
    import imgclust

    path = pca_state(run_copy)
    rewrite_pca(path, (8, 10 * MIB), compressed=True)
    assert path.stat().st_size < 2 * MIB
    peak, raised = peak_while(lambda: imgclust.load(run_copy))
    assert isinstance(raised, DataError), raised
    assert "pca.npz" in str(raised) and "decompression bomb" in str(raised)
    assert peak < 32 * MIB


def test_a_pca_member_is_read_once(run_copy):
    """A legal but large member is inflated once, into the array that keeps it."""
    import imgclust

    path = pca_state(run_copy)
    rewrite_pca(path, (8, 1 * MIB), compressed=True)  # 32 MiB, under the bomb floor
    peak, raised = peak_while(lambda: imgclust.load(run_copy))
    assert isinstance(raised, ImgclustError), raised  # the shape does not fit the run
    assert 32 * MIB <= peak < 48 * MIB


def test_a_keras_config_bomb_is_refused_before_the_lambda_audit_reads_it(run_copy):
    """A config.json of a few hundred KB inside a .keras file that inflates to 100 MiB."""
    import imgclust

    folder = next((run_copy / "pipeline").glob("encoder-*"))
    target = folder / "classifier.keras"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        deflated_member(archive, "config.json", None, 100 * MIB)
    assert target.stat().st_size < MIB
    peak, raised = peak_while(lambda: imgclust.load(run_copy))
    assert isinstance(raised, DataError), raised
    assert "config.json" in str(raised) and "classifier.keras" in str(raised)
    assert peak < 16 * MIB


def test_a_keras_config_larger_than_any_model_needs_is_refused(run_copy, cli, tmp_path):
    folder = next((run_copy / "pipeline").glob("encoder-*"))
    with zipfile.ZipFile(folder / "model.keras", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("config.json", b"{}" + b" " * (9 * MIB))
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
    result = cli("predict", run_copy, tmp_path / "x.npy", "-o", tmp_path / "out.csv")
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "config.json" in line and "more than the 8 MiB" in line


@pytest.mark.parametrize("declared", [20, 10**12])
def test_a_member_that_lies_about_its_size_is_refused(tmp_path, declared):
    """An array whose header claims more than its member holds (a little, or absurdly)."""
    from imgclust.io.bounded import read_npz

    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        header = {"descr": "<f8", "fortran_order": False, "shape": (declared,)}
        deflated_member(archive, "a.npy", header, 80)
    with pytest.raises(DataError, match="truncated or damaged"):
        read_npz(path, "x.npz")


def test_the_bounded_reader_gives_back_what_numpy_wrote(tmp_path):
    from imgclust.io.bounded import read_npy, read_npz

    arrays = {
        "big_endian": np.arange(12, dtype=">f4").reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
        "scalar": np.array(5),
        "empty": np.zeros((0, 3)),
        "text": np.array(["cat", "dog"]),
    }
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    np.savez(tmp_path / "b.npz", **arrays)
    for name in ("a.npz", "b.npz"):
        read = read_npz(tmp_path / name, name)
        for key, value in arrays.items():
            assert read[key].dtype == value.dtype and read[key].shape == value.shape
            np.testing.assert_array_equal(read[key], value)
    np.save(tmp_path / "f.npy", arrays["fortran"])
    np.testing.assert_array_equal(read_npy(tmp_path / "f.npy", "f.npy"), arrays["fortran"])


def test_every_npz_and_zip_read_goes_through_the_bounded_reader():
    """No module reads an archive or array file any other way (memory maps of files imgclust
    checked or wrote itself aside)."""
    root = Path(__file__).parents[2]
    allowed = {"core/io/bounded.py"}
    found = []
    for path in sorted([*root.glob("core/**/*.py"), *root.glob("plugins/**/*.py")]):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            reads = (".read(" in code and "archive" in code) or "np.load(" in code
            mapped = 'mmap_mode="r' in code
            if reads and not mapped and rel not in allowed:
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
