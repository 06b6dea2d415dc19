"""What the decode cache's content check costs: hashing every file against decoding them.

For N synthetic 28x28 PNGs (scale.py's digit-like images), with the page cache warm, it times
listing the folder, stamping it by content (BLAKE2b of every file) and by stat, decoding every
file serially, and a cache hit under each check. Best of ``--repeats``; JSON on stdout.

    nice python benchmarks/cache_check.py [--n 10000] [--root DIR]

Files go under ``--root`` (default: a temporary folder, removed afterwards); never commit them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scale import png_folder, warm_page_cache


def best_of(repeats: int, work: Callable[[], Any]) -> float:
    """The shortest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return round(min(times), 3)


def measure(folder: Path, cache: Path, repeats: int) -> dict[str, Any]:
    from imgclust.io import imagecache
    from imgclust.io.images import DEFAULT_EXTENSIONS, scan_folder
    from imgclust.plugins.image_folder import ImageFolderDataset

    files = scan_folder(folder, True, DEFAULT_EXTENSIONS)

    def load(check: str, cached: bool = True) -> Any:
        dataset = ImageFolderDataset(
            path=str(folder),
            labels="none",
            workers=1,
            cache=cached,
            cache_dir=str(cache),
            cache_check=check,
        )
        return dataset.load("all")

    load("content")  # write the entry once: the hits below read it
    load("stat")
    result = {
        "n": len(files),
        "mean_file_bytes": round(sum(f.size for f in files) / len(files)),
        "list_s": best_of(repeats, lambda: scan_folder(folder, True, DEFAULT_EXTENSIONS)),
        "stamp_content_s": best_of(repeats, lambda: imagecache.stamp_files(files, "content")),
        "stamp_stat_s": best_of(repeats, lambda: imagecache.stamp_files(files, "stat")),
        "decode_serial_s": best_of(max(1, repeats // 2), lambda: load("content", cached=False)),
        "hit_content_s": best_of(repeats, lambda: load("content")),
        "hit_stat_s": best_of(repeats, lambda: load("stat")),
        "load_average": os.getloadavg()[0],
    }
    result["content_over_decode"] = round(result["stamp_content_s"] / result["decode_serial_s"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    root = options.root or Path(tempfile.mkdtemp(prefix="imgclust-cache-check-"))
    try:
        folder = png_folder(root, options.n, workers=max(1, (os.cpu_count() or 1) // 2))
        warm_page_cache(folder)
        print(json.dumps(measure(folder, root / "cache", options.repeats), indent=2))
    finally:
        if options.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
