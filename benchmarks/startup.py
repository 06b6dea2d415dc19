"""How long the light commands take, and that they import no heavy library.

``imgclust --help``, ``--version`` and ``plugins`` should take well under a second: they load the
plugins' registrations, never TensorFlow, Keras, UMAP, numba or hdbscan. Each command runs in a
fresh process several times; the median is reported beside a bare ``python -c pass``.

    python benchmarks/startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from common import median, save_results, update_doc_section

HEAVY = ("tensorflow", "keras", "umap", "numba", "hdbscan", "matplotlib", "sklearn")
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "imgclust --version": [sys.executable, "-m", "imgclust", "--version"],
    "imgclust --help": [sys.executable, "-m", "imgclust", "--help"],
    "imgclust plugins": [sys.executable, "-m", "imgclust", "plugins"],
    "imgclust list encoders": [sys.executable, "-m", "imgclust", "list", "encoders"],
}
PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['imgclust'] + sys.argv[1:]\n"
    "try:\n    runpy.run_module('imgclust', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
)


def time_command(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def heavy_imports(argv: list[str]) -> list[str]:
    if argv[1] == "-c":
        return []
    done = subprocess.run([sys.executable, "-c", PROBE, *argv[3:]], capture_output=True, text=True)
    line = [x for x in done.stderr.splitlines() if x.startswith("HEAVY")][-1]
    return eval(line.removeprefix("HEAVY "))  # a list literal printed by the probe above


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    os.environ.setdefault("IMGCLUST_LOAD_PLUGINS", "")
    rows = {}
    for name, argv in COMMANDS.items():
        times = time_command(argv, args.repeats)
        rows[name] = {
            "median_s": round(median(times), 3),
            "min_s": round(min(times), 3),
            "heavy_imports": heavy_imports(argv),
        }
        print(
            f"{name:26s} median {rows[name]['median_s']:.3f} s  "
            f"heavy imports: {rows[name]['heavy_imports'] or 'none'}"
        )
    save_results("startup", {"repeats": args.repeats, "commands": rows})
    lines = [
        f"`python benchmarks/startup.py` (median of {args.repeats} fresh processes each):",
        "",
        "| command | median | heavy libraries imported |",
        "| --- | ---: | --- |",
    ]
    lines += [
        f"| `{name}` | {r['median_s']:.2f} s | {', '.join(r['heavy_imports']) or 'none'} |"
        for name, r in rows.items()
    ]
    update_doc_section("startup", "\n".join(lines))


if __name__ == "__main__":
    main()
