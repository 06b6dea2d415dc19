"""Files a user names for imgclust to write, and the CSV text imgclust writes.

An output never replaces a folder, replaces an existing file only with ``--force``, and never
replaces one of the command's own inputs (not through a symlink or hard link either). Nothing is
ever written inside a *protected* folder (a run folder the command reads, or the images that run
clustered), unless the command writes into the run by design; every command with an output
option claims it through :func:`claim_output` or :func:`claim_output_folder`, which share
:func:`check_output_place`. CSV cells
that a spreadsheet would read as a formula are escaped with a leading ``'``.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from numbers import Number
from pathlib import Path
from typing import Any

from imgclust.errors import DataError, ImgclustError
from imgclust.io import atomic
from imgclust.io.runfolder import os_hint, os_reason

# Output files ------------------------------------------------------------------------------


def claim_output(
    path: Path | str,
    *,
    force: bool,
    inputs: Iterable[Path | str] = (),
    protected: Iterable[Path | str] = (),
    option: str = "--output",
) -> Path:
    """``path`` checked as a place to write a new file: not an input, not inside a
    ``protected`` folder; every refusal is one line."""
    path = Path(path)
    shown = f"{option} {str(path)!r}"
    try:
        _check_output(path, shown, force, [Path(p) for p in inputs])
        check_output_place(path, shown, [Path(p) for p in protected])
    except (OSError, RuntimeError) as exc:  # unreadable folders, symlink loops
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ImgclustError(f"{shown} cannot be used: {reason}.") from None
    return path


def _check_output(path: Path, shown: str, force: bool, inputs: list[Path]) -> None:
    if path.is_dir():
        raise ImgclustError(f"{shown} is a folder: give a file name, for example {path / 'out'}.")
    if _is_an_input(path, inputs):
        raise ImgclustError(f"{shown} is one of this command's inputs: {_ELSEWHERE}")
    if os.path.lexists(path):
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise ImgclustError(f"{shown} exists and is not a regular file: give another name.")
        if not force:
            raise ImgclustError(
                f"{shown} already exists: give a new name, or --force to replace it."
            )
        if path.exists() and _found_in_folders(path, [p for p in inputs if p.is_dir()]):
            raise ImgclustError(f"{shown} is one of this command's inputs: {_ELSEWHERE}")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if os.path.lexists(parent) else "does not exist"
        raise ImgclustError(f"{shown}: folder {str(parent)!r} {what}: create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImgclustError(f"{shown}: folder {str(parent)!r} is not writable.")


_ELSEWHERE = "write the output to another file."


def check_output_place(path: Path, shown: str, protected: Sequence[Path]) -> None:
    """Refuse an output that is, lies inside or holds a ``protected`` path (a run folder the
    command reads, the image folder or array file that run clustered), by name or through links;
    the one place where every command's outputs are checked against what it must not touch."""
    target = path.resolve()
    for given in protected:
        source = given.resolve()
        inside = target == source or target.is_relative_to(source)
        same = path.exists() and given.exists() and os.path.samefile(path, given)
        if inside or same or source.is_relative_to(target):
            raise ImgclustError(
                f"{shown} overlaps {str(given)!r}, which this command reads and never writes "
                "into (the run folder and the images it clustered): write the output elsewhere."
            )
        if path.exists() and source.is_dir() and _found_in_folders(path, [source]):
            raise ImgclustError(f"{shown} is one of this command's inputs: {_ELSEWHERE}")


def claim_output_folder(
    path: Path | str,
    *,
    inputs: Iterable[Path | str] = (),
    protected: Iterable[Path | str] = (),
    option: str = "OUT",
) -> Path:
    """``path`` checked as a new folder to fill: absent or empty, not a link, not inside (or
    holding) one of the command's inputs or ``protected`` folders, its parent a writable folder;
    refusals are one line."""
    path = Path(path)
    shown = f"{option} {str(path)!r}"
    try:
        if path.is_symlink():
            raise ImgclustError(f"{shown} is a link: give a new folder.")
        if path.exists() and not path.is_dir():
            raise ImgclustError(f"{shown} is a file: give a new folder.")
        if path.is_dir() and any(path.iterdir()):
            raise ImgclustError(f"{shown} already exists and is not empty: give a new folder.")
        target = path.resolve()
        for given in (Path(p) for p in inputs):
            source = given.resolve()
            if target == source or target.is_relative_to(source) or source.is_relative_to(target):
                raise ImgclustError(
                    f"{shown} overlaps this command's input {str(given)!r}: "
                    "give a folder outside it."
                )
        check_output_place(path, shown, [Path(p) for p in protected])
        parent = path.absolute().parent
        if not parent.is_dir():
            what = "is not a folder" if os.path.lexists(parent) else "does not exist"
            raise ImgclustError(f"{shown}: folder {str(parent)!r} {what}: create it first.")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ImgclustError(f"{shown}: folder {str(parent)!r} is not writable.")
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ImgclustError(f"{shown} cannot be used: {reason}.") from None
    return path


def write_output(path: Path, text: str, *, force: bool, option: str = "--output") -> Path:
    """Write a claimed output whole or not at all; without ``force`` never over a file that
    appeared since it was claimed."""
    return write_output_lines(path, [text], force=force, option=option)


def write_output_lines(
    path: Path, lines: Iterable[str], *, force: bool, option: str = "--output"
) -> Path:
    """:func:`write_output` for text made a line at a time (streamed, never held whole)."""

    shown = f"{option} {str(path)!r}"
    try:
        return atomic.write_parts(path, (line.encode("utf-8") for line in lines), overwrite=force)
    except FileExistsError:
        raise ImgclustError(
            f"{shown} already exists: give a new name, or --force to replace it."
        ) from None
    except OSError as exc:
        raise ImgclustError(f"cannot write {shown}: {os_reason(exc)}; {os_hint(exc)}.") from None


def _is_an_input(path: Path, inputs: Sequence[Path]) -> bool:
    """Whether ``path`` is an input, by name or link, or an existing file inside an input folder."""
    target = path.resolve()
    exists = path.exists()
    for given in inputs:
        source = given.resolve()
        if target == source or (exists and given.exists() and os.path.samefile(path, given)):
            return True
        if exists and source.is_dir() and target.is_relative_to(source):
            return True
    return False


def _found_in_folders(path: Path, folders: Sequence[Path]) -> bool:
    """Whether ``path`` is the same file as one below ``folders`` (a hard link, or a file that a
    link in the folder points to); only asked with ``--force``, as it reads whole folders."""
    info = path.stat()
    key = (info.st_dev, info.st_ino)
    for folder in folders:
        for root, _, names in os.walk(folder):  # links to folders are not read, so not followed
            for name in names:
                try:
                    other = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                if (other.st_dev, other.st_ino) == key:
                    return True
    return False


# CSV ---------------------------------------------------------------------------------------

#: A cell that starts with one of these (after any leading blanks) could be run as a formula by
#: a spreadsheet; ``'`` is escaped as well so that reading back is exact.
FORMULA_STARTS = frozenset("=+-@\t\r\n\0'\uff1d\uff0b\uff0d\uff20")
_BLANKS = re.compile(r"[\s\u200b-\u200d\u2060\ufeff]*")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """``value`` safe to open in a spreadsheet: text that could start a formula gets a ``'``
    in front (OWASP's advice); numbers and plain numeric text keep their form."""
    if value is None:
        return ""
    if isinstance(value, Number) and not isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else str(value)
    if not text or _PLAIN_NUMBER.fullmatch(text):
        return text
    blanks = _BLANKS.match(text)  # always matches: the pattern accepts an empty string
    if text[0] in FORMULA_STARTS or text[blanks.end() if blanks else 0 :][:1] in FORMULA_STARTS:
        return "'" + text
    return text


def read_csv_cell(text: str) -> str:
    """The value :func:`csv_cell` escaped, as it was before."""
    return text[1:] if text.startswith("'") else text


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A header and rows as CSV text (``\\n`` line ends), every cell through :func:`csv_cell`."""
    return "".join(csv_lines(header, rows))


def csv_lines(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """:func:`csv_text` a line at a time, for outputs too long to hold whole."""
    buffer = io.StringIO()
    minimal = csv.writer(buffer, lineterminator="\n")
    # with "\n" line ends the csv module leaves a lone "\r" unquoted, which would split a row
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    for row in itertools.chain([header], rows):
        safe = [csv_cell(cell) for cell in row]
        writer = quoted if any(isinstance(c, str) and "\r" in c for c in safe) else minimal
        writer.writerow(safe)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


MAX_CLUSTER = 2**31 - 1  # cluster numbers a run writes are far below this


def read_assignments(path: Path) -> tuple[list[str], Any, Any]:
    """Ids, clusters and (when the run knew them) label names from assignments.csv; a damaged
    file (not UTF-8, not CSV, a cluster that is not a whole number from -1) is one line."""
    import numpy as np

    def damaged(what: str) -> DataError:
        return DataError(
            f"{path} {what}: the run folder is damaged; run `imgclust run` again or restore it."
        )

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DataError(
            f"{path.parent.name!r} has no assignments.csv: give a run folder that "
            "`imgclust run` finished."
        ) from None
    except UnicodeDecodeError as exc:
        raise damaged(f"is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise damaged(f"is not CSV ({exc})") from None
    except OSError as exc:
        raise damaged(f"cannot be read ({exc.strerror or exc})") from None
    if not rows or rows[0][:2] != ["id", "cluster"] or len(rows) < 2:
        raise DataError(f"{path} is empty or not an imgclust assignments file.")
    has_labels = len(rows[0]) > 2 and rows[0][2] == "label"
    try:
        numbers = [int(r[1]) for r in rows[1:]]
    except (IndexError, ValueError):
        raise DataError(f"{path} has a row without a whole-number cluster.") from None
    wrong = next((n for n in numbers if not -1 <= n <= MAX_CLUSTER), None)
    if wrong is not None:
        shown = str(wrong) if len(str(wrong)) <= 24 else f"{str(wrong)[:21]}..."
        raise damaged(f"has cluster {shown}, not one from -1 (noise) to {MAX_CLUSTER:,}")
    clusters = np.array(numbers, dtype=np.int64)
    labels = (
        np.array([read_csv_cell(r[2]) if len(r) > 2 else "" for r in rows[1:]], dtype=object)
        if has_labels
        else None
    )
    return [read_csv_cell(r[0]) for r in rows[1:]], clusters, labels


VIEW_FILE_BYTES = 256 << 20  # per-image files the page reads (a million rows take about 60 MiB)


def _rows_by_header(path: Path, columns: Sequence[str]) -> list[list[str]] | None:
    """The given columns of a CSV file the run wrote, by header name; None when the file or a
    column is missing. A damaged file is one line (:class:`DataError`)."""
    try:
        if path.stat().st_size > VIEW_FILE_BYTES:
            raise DataError(f"{path} is larger than {VIEW_FILE_BYTES >> 20} MiB: not read.")
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise DataError(f"{path} cannot be read ({type(exc).__name__}).") from None
    if not rows or not all(name in rows[0] for name in columns):
        return None
    where = [rows[0].index(name) for name in columns]
    if any(len(row) <= max(where) for row in rows[1:]):
        raise DataError(f"{path} has a row shorter than its header: the run folder is damaged.")
    return [[row[i] for i in where] for row in rows[1:]]


def read_image_scores(path: Path) -> dict[str, Any] | None:
    """Confidence (0 to 1) and outlier score (0 or more) of every image from assignments.csv;
    None for a run written before they existed."""
    import numpy as np

    rows = _rows_by_header(path, ["confidence", "outlier"])
    if rows is None:
        return None
    try:
        values = np.array([[float(a), float(b)] for a, b in rows], dtype=np.float64)
    except ValueError:
        raise DataError(f"{path} has a confidence or outlier score that is not a number.") from None
    values = values.reshape(-1, 2)
    confidence, outlier = values[:, 0], values[:, 1]
    if not ((confidence >= 0) & (confidence <= 1)).all() or not (outlier >= 0).all():
        raise DataError(f"{path} has a confidence outside 0..1 or a negative outlier score.")
    return {"confidence": confidence, "outlier": outlier}


def read_issues(path: Path) -> list[tuple[str, str]] | None:
    """(id, issues) of every image issues.csv flags; None when the run has no issues.csv."""
    rows = _rows_by_header(path, ["id", "issues"])
    if rows is None:
        return None
    return [(read_csv_cell(i), text[:200]) for i, text in rows if text]


def read_label_review(path: Path) -> list[tuple[str, str]] | None:
    """(id, suggested label) of the label review's images, most doubtful first; None when
    the run has no label_review.csv."""
    rows = _rows_by_header(path, ["id", "suggested"])
    if rows is None:
        return None
    return [(read_csv_cell(i), read_csv_cell(suggested)[:200]) for i, suggested in rows]
