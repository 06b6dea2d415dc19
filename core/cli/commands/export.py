"""``imgclust export RUN OUT``: a finished run's images sorted into one folder per cluster.

``OUT/cluster-00/`` holds the largest cluster, ``OUT/cluster-01/`` the next, and ``OUT/noise/``
the images no cluster took; ``OUT/clusters.csv`` says where each image went. An image-folder run
exports its original files (copies, or links with ``--link``); other datasets are written as
PNGs from the images the run's dataset loads again. Everything is written into a temporary
folder beside OUT and renamed to OUT when whole, so OUT never holds half an export. The temporary
folder carries a marker whose lock its process holds; an export killed midway (SIGKILL, power
loss) leaves it behind, and the next export into the same parent folder removes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer

from imgclust.after.curation import read_curation
from imgclust.after.finished import (
    check_finished,
    open_run,
    run_sources,
    verified_images,
)
from imgclust.cli.options import AS_JSON
from imgclust.console import printable, stderr_log
from imgclust.errors import DataError, ImgclustError
from imgclust.io import atomic
from imgclust.io.content import PREFIX, READ_BYTES, file_digest, new_hasher
from imgclust.io.outputs import claim_output_folder, csv_text
from imgclust.io.runfolder import os_hint, os_reason

CSV_NAME = "clusters.csv"
IMAGE_FOLDER = "image-folder"
NOISE = "noise"
NAME_BYTES = 255  # the longest file name common file systems take
CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
STAGING = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what tempfile.mkdtemp makes below
STAGING_MARKER = ".imgclust-export"
DROPPED = "dropped"  # what clusters.csv says of an image a curation dropped (it is not written)
PORTABLE = "A-Za-z0-9_.-"  # the characters of file names made from ids
NAMED = r"\w.-"  # of folders named by a person: letters and digits of any script, '_', '.', '-'
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
_CROSS_DEVICE = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass
class Placement:
    """Where one image of the run goes: its row, cluster folder and file name there."""

    row: int
    folder: str
    name: str

    @property
    def file(self) -> str:
        return f"{self.folder}/{self.name}"


# Planning ----------------------------------------------------------------------------------
def cluster_folders(clusters: np.ndarray, names: Mapping[int, str] | None = None) -> dict[int, str]:
    """``cluster-00`` for the largest cluster and so on (ties: lower number first); ``noise``
    for -1; a cluster a person named (``names``) gets a folder of that name. Two clusters whose
    folders would be one (ignoring case) are one line."""
    sizes = Counter(int(c) for c in clusters if c >= 0)
    ranked = sorted(sizes, key=lambda c: (-sizes[c], c))
    width = max(2, len(str(len(ranked) - 1)))
    folders = {cluster: f"cluster-{rank:0{width}d}" for rank, cluster in enumerate(ranked)}
    folders[-1] = NOISE
    for cluster, name in (names or {}).items():
        if cluster in folders:
            folders[cluster] = named_folder(name, cluster)
    used: dict[str, int] = {CSV_NAME.casefold(): -3}
    for cluster in [*ranked, -1]:
        if cluster == -1 and -1 not in clusters:
            continue
        key = folders[cluster].casefold()
        if key in used:
            other = "the table clusters.csv" if used[key] == -3 else f"cluster {used[key]}"
            raise DataError(
                f"cluster {cluster} would be written to folder {folders[cluster]!r}, as "
                f"{other} is: give the clusters different names (or merge them) in the page."
            )
        used[key] = cluster
    return folders


def named_folder(name: str, cluster: int) -> str:
    """The folder of a cluster a person named: the name with every run of other characters
    than letters, digits, '_', '.' and '-' made one '-' (as file names are), cut to fit."""
    import unicodedata

    folder = _safe(unicodedata.normalize("NFC", name), NAMED, "")
    if not folder:
        raise DataError(
            f"cluster {cluster}'s name {name[:40]!r} has no letter or digit to name a folder "
            "with: rename it in the page."
        )
    return folder


def plan(
    finished: Any,
    sources: list[Path] | None,
    clusters: np.ndarray | None = None,
    names: Mapping[int, str] | None = None,
) -> list[Placement]:
    """Each image's folder and a file name unique in that folder (case-insensitively).

    ``clusters``: curated clusters in place of the run's (-2: dropped, placed nowhere), with
    the folders of the clusters the person named."""
    clusters = finished.clusters if clusters is None else clusters
    folders = cluster_folders(clusters, names)
    taken: dict[str, set[str]] = {}
    placements = []
    for row, image_id in enumerate(finished.ids):
        if clusters[row] < -1:
            placements.append(Placement(row, "", ""))
            continue
        folder = folders[int(clusters[row])]
        used = taken.setdefault(folder, set())
        if sources is not None:
            wanted = [sources[row].name, _flat(image_id)]
        else:
            wanted = [_safe(image_id) + ".png"]
        placements.append(Placement(row, folder, _unique(wanted, used)))
    return placements


def _safe(text: str, keep: str = PORTABLE, empty: str = "image") -> str:
    """``text`` as a portable file name stem: runs of characters outside ``keep`` become '-',
    no '.' or '-' at either end (no hidden or relative names); ``empty`` when nothing is left."""
    stem = re.sub(f"[^{keep}]+", "-", text).strip(".-") or empty
    return _fit(stem, "")


def _flat(image_id: str) -> str:
    """A file's path in its folder as one name: 'a/b.jpg' -> 'a_b.jpg'."""
    path = Path(image_id)
    stem = _safe("_".join([*path.parent.parts, path.stem]))
    return _fit(stem, _safe(path.suffix) if path.suffix else "")


def _fit(stem: str, suffix: str) -> str:
    """``stem + suffix`` cut to NAME_BYTES bytes (the suffix kept)."""
    room = NAME_BYTES - len(suffix.encode()) - 8  # space for a "-NNNNNN" made unique
    data = stem.encode()
    if len(data) > room:
        stem = data[:room].decode("utf-8", "ignore")
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    return stem + suffix


def _unique(wanted: list[str], used: set[str]) -> str:
    """The first of ``wanted`` not yet used, else the first numbered ``-2``, ``-3``..."""
    for name in wanted:
        if name.casefold() not in used:
            used.add(name.casefold())
            return name
    stem, dot, suffix = wanted[0].rpartition(".") if "." in wanted[0] else (wanted[0], "", "")
    number = 2
    while True:
        name = f"{stem}-{number}{dot}{suffix}"
        if name.casefold() not in used:
            used.add(name.casefold())
            return name
        number += 1


# Writing -----------------------------------------------------------------------------------
def export_csv(
    finished: Any,
    placements: list[Placement],
    with_files: bool,
    left_out: frozenset[int],
    curated: np.ndarray | None = None,
) -> str:
    """id, cluster, folder, file (inside OUT; empty for an image left out because it changed
    since the run) and label when the run knew labels. With ``curated`` clusters, cluster is
    the curated one ("dropped" for a dropped image, which has no folder) and run_cluster the
    run's."""

    with_labels = finished.labels is not None
    header = ["id", "cluster", *(["run_cluster"] if curated is not None else []), "folder"]
    header += ["file"] if with_files else []
    header += ["label"] if with_labels else []
    rows = []
    for place in placements:
        run_cluster = int(finished.clusters[place.row])
        row: list[Any] = [finished.ids[place.row]]
        if curated is None:
            row += [run_cluster]
        else:
            cluster = int(curated[place.row])
            row += [DROPPED if cluster < -1 else cluster, run_cluster]
        row += [place.folder]
        placed = place.folder and place.row not in left_out
        row += [place.file if placed else ""] if with_files else []
        row += [str(finished.labels[place.row])] if with_labels else []
        rows.append(row)
    return csv_text(header, rows)


def write_export(
    out: Path,
    finished: Any,
    placements: list[Placement],
    mode: str,
    sources: list[Path] | None,
    images: Any,
    recorded: list[str] | None = None,
    left_out: frozenset[int] = frozenset(),
    curated: np.ndarray | None = None,
) -> dict[str, int]:
    """Fill a temporary folder beside ``out``, then rename it to ``out``; counts of what was
    copied, linked, symlinked or drawn. A source file is placed only when its content is the
    ``recorded`` digest (checked as it is copied or linked); rows ``left_out`` are skipped, and
    so are images a curation dropped (no folder)."""

    out = Path(out)
    parent = out.absolute().parent
    remove_abandoned_staging(parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ImgclustError(
            f"cannot export to {str(out)!r}: {os_reason(exc)}; {os_hint(exc)}."
        ) from None
    counts: Counter[str] = Counter()
    marker = None
    try:
        marker = mark_staging(staging)
        os.chmod(staging, 0o777 & ~atomic.current_umask())
        if mode != "csv":
            for folder in sorted({p.folder for p in placements if p.folder}):
                (staging / folder).mkdir()
            for place in placements:
                target = staging / place.folder / place.name
                if not place.folder:
                    continue  # dropped by a curation: in clusters.csv only
                if place.row in left_out:
                    counts["left out (changed)"] += 1
                elif sources is None:
                    _write_png(images[place.row], target)
                    counts["png"] += 1
                else:
                    assert recorded is not None
                    digest = recorded[place.row]
                    counts[_place_file(sources[place.row], target, mode, digest)] += 1
        csv = export_csv(finished, placements, mode != "csv", left_out, curated)
        atomic.write_text(staging / CSV_NAME, csv)
        (staging / STAGING_MARKER).unlink()  # OUT holds only the export
        try:
            os.rename(staging, out)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise ImgclustError(
                    f"OUT {str(out)!r} appeared or filled while exporting: give a new folder."
                ) from None
            raise
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if marker is not None:
            os.close(marker)
            marker = None
        if isinstance(exc, OSError):
            named = str(getattr(exc, "filename", None) or "")
            where = f" ({named})" if named and not named.startswith(str(staging)) else ""
            raise ImgclustError(
                f"cannot export to {str(out)!r}: {os_reason(exc)}{where}; {os_hint(exc)}."
            ) from None
        raise
    if marker is not None:
        os.close(marker)
    return dict(counts)


def mark_staging(staging: Path) -> int:
    """Mark a staging folder as this process's: a marker file naming the process, locked for as
    long as the export runs; the marker's open descriptor (closing it releases the lock)."""
    fd = os.open(staging / STAGING_MARKER, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
    try:
        os.write(fd, json.dumps({"format": "imgclust-export", "pid": os.getpid()}).encode())
        with contextlib.suppress(OSError):  # without locks the process id alone tells
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_abandoned_staging(parent: Path) -> list[Path]:
    """Remove the staging folders that exports killed midway left in ``parent``: only folders
    named as export names them, holding this format's marker, whose process is gone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not STAGING.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        if _abandoned(Path(entry.path) / STAGING_MARKER):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _abandoned(marker: Path) -> bool:
    """Whether ``marker`` is an export's marker whose process no longer runs."""
    try:
        fd = os.open(marker, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # no marker (not an export's), or a link: leave it
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > 4096:
            return False
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        if not (isinstance(record, dict) and record.get("format") == "imgclust-export"):
            return False
        pid = record.get("pid")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                return False  # locked: its export is still running
            return isinstance(pid, int) and pid > 0 and not _running(pid)
        return True  # nobody holds the lock: the process that made it is gone
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True  # another user's process, or not a pid this system has: keep it
    return True


def _place_file(source: Path, target: Path, mode: str, digest: str) -> str:
    """Copy ``source`` to ``target`` or hard-link it (a symbolic link where hard links cannot
    be made, such as across file systems); which was done. What lands in ``target`` must have
    the content ``digest`` the run recorded, or it is removed and the export refused."""

    if mode == "copy":
        done = "copied"
        _copy_checked(source, target, digest)
    else:
        try:
            os.link(source, target)
            done = "linked"
        except OSError as exc:
            if exc.errno not in _CROSS_DEVICE:
                raise
            os.symlink(os.path.abspath(source), target)
            done = "symlinked"
        if file_digest(target) != digest:
            target.unlink()
            _changed_while_exporting(source)
    return done


def _copy_checked(source: Path, target: Path, digest: str) -> None:
    """Copy ``source`` to the new file ``target`` block by block, hashing what is read; the
    copy is removed unless its content has the ``digest`` the run recorded."""

    hasher = new_hasher()
    with open(source, "rb") as reader, open(target, "xb") as writer:
        while block := reader.read(READ_BYTES):
            hasher.update(block)
            writer.write(block)
    if PREFIX + hasher.hexdigest() != digest:
        target.unlink()
        _changed_while_exporting(source)
    shutil.copystat(source, target)


def _changed_while_exporting(source: Path) -> None:
    raise DataError(
        f"{str(source)!r} changed while it was exported: its content is no longer what the run "
        "clustered; export again."
    )


def _write_png(image: Any, target: Path) -> None:
    """One image as a PNG at ``target`` (a new file): grey, RGB or RGBA by its channels."""
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    with open(target, "xb") as handle:
        Image.fromarray(array).save(handle, format="PNG")


def _check_images(images: Any, count: int, dataset: str) -> None:
    """Images PNG can hold: (N, H, W, C) with 1, 3 or 4 channels, one per id."""
    shape: tuple[int, ...] = getattr(images, "shape", ())
    if len(shape) != 4 or shape[0] != count or shape[3] not in CHANNEL_MODES:
        raise DataError(
            f"dataset {dataset!r} gave images of shape {tuple(shape)}: only 1, 3 or 4 channels "
            "can be written as PNG; use --csv."
        )


# Command -----------------------------------------------------------------------------------
def export_command(
    run: Path = typer.Argument(..., help="A finished run folder."),
    out: Path = typer.Argument(..., help="A new (or empty) folder to fill."),
    copy: bool = typer.Option(False, "--copy", help="Copy the original files (the default)."),
    link: bool = typer.Option(
        False,
        "--link",
        help="Hard-link the original files (symbolic links across file systems).",
    ),
    csv_only: bool = typer.Option(False, "--csv", help=f"Write only OUT/{CSV_NAME}."),
    allow_changed: bool = typer.Option(
        False,
        "--allow-changed",
        help="Go on when images changed since the run: changed files are left out (never "
        "copied), other datasets are drawn as they are now; reported.",
    ),
    curation: Path | None = typer.Option(
        None,
        "--curation",
        help="Apply the renames, merges, moves and drops of a curation.json the run's "
        "report.html downloaded: folders take the clusters' new names, dropped images stay out.",
    ),
    as_json: bool = AS_JSON,
) -> None:
    """Sort a run's images into one folder per cluster (largest first), with a CSV of where."""

    if copy + link + csv_only > 1:
        raise ImgclustError("give only one of --copy, --link and --csv.")
    mode = "link" if link else "csv" if csv_only else "copy"
    check_finished(run, "export")
    claim_output_folder(out, inputs=[run], protected=run_sources(run))
    finished = open_run(run, "export")
    curated = names = None
    notes = []
    if curation is not None:
        edits = read_curation(curation, finished.ids, finished.clusters)
        curated, names = edits.apply(finished.ids, finished.clusters), edits.names
        if edits.made_for != Path(run).resolve().name:
            notes.append(
                f"the curation was made for run {printable(edits.made_for)[:80]!r}; it names "
                "only this run's images and clusters, so it was applied"
            )
    images = sources = digests = None
    left_out: frozenset[int] = frozenset()
    note = ""
    if mode == "link" and finished.dataset != IMAGE_FOLDER:
        raise DataError(
            f"--link needs an image-folder run; this run's dataset {finished.dataset!r} has no "
            "files to link: leave out --link to write PNGs."
        )
    if mode != "csv":
        found = verified_images(finished, "export", allow_changed)
        note = found.check.describe()
        if found.check.reason:
            raise DataError(
                f"the run's images cannot be had ({found.check.reason.rstrip('.')}), so there "
                "is nothing to export: use --csv for where each image went."
            )
        if found.files is not None:
            if not found.check.recorded:
                raise DataError(
                    f"run {run.name!r} records no digests of its files (it predates them), and "
                    "export copies only files whose content the run recorded: run it again, or "
                    "export --csv."
                )
            claim_output_folder(out, inputs=[p for p in (run, found.root) if p is not None])
            sources, left_out = found.files, frozenset(found.changed_rows)
            digests = found.recorded
        else:
            images = found.data.images
            _check_images(images, len(finished.ids), finished.dataset)
    placements = plan(finished, sources, curated, names)
    if len(placements) > 5000 and mode != "csv":
        stderr_log()(f"exporting {len(placements)} images")
    counts = write_export(
        out, finished, placements, mode, sources, images, digests, left_out, curated
    )
    sizes = Counter(p.folder for p in placements if p.folder)
    dropped = len(placements) - sum(sizes.values())
    record = {
        "run": str(run),
        "out": str(out),
        "mode": "png" if images is not None else mode,
        "n_images": sum(sizes.values()),
        "folders": dict(sorted(sizes.items())),
        "written": counts,
        "csv": str(out / CSV_NAME),
        "content": note or ("not checked (--csv)" if mode == "csv" else "unchanged since the run"),
    }
    if curation is not None:
        record["curation"] = {"file": str(curation), **edits.edits}
    if as_json:
        typer.echo(json.dumps({**record, **({"notes": notes} if notes else {})}, indent=2))
        return
    clusters = len([f for f in sizes if f != NOISE])
    noise = f" and {sizes[NOISE]} noise images" if NOISE in sizes else ""
    how = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "only the CSV"
    typer.echo(
        f"exported {sum(sizes.values())} images into {clusters} cluster folders{noise} ({how})"
        + (f"; {dropped} dropped images left out" if dropped else "")
    )
    for line in [note, *notes]:
        if line:
            typer.echo(f"note: {line}")
    if counts.get("symlinked"):
        typer.echo("note: symbolic links were made where hard links were not possible")
    typer.echo(f"wrote {out}")


def register(app: Any) -> None:
    """Add ``export`` to the CLI."""
    app.command("export")(export_command)
