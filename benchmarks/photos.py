"""Speed of the pretrained backbones on this CPU, and peak memory encoding 10,000 photos.

Throughput is measured with ``weights="none"``, which costs exactly what ImageNet weights cost
(the same network, other numbers); each backbone runs in a fresh process on random 224x224 RGB
images, a warm-up batch first, then the median images per second of ``--repeats`` timed passes.
Peak memory is the resident set of one process that encodes ``--memory-images`` images from a
uint8 memory map (the way image-folder hands them over). When ImageNet weights are already in
the Keras cache, the script says which; it never downloads them.

    python benchmarks/photos.py [--images 128] [--repeats 3] [--memory-images 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import median, save_results, update_doc_section

BACKBONES = (
    "mobilenetv3-small",
    "mobilenetv3-large",
    "efficientnetv2-b0",
    "resnet50v2",
    "convnext-tiny",
)

WORKER = r"""
import json, resource, sys, time
import numpy as np
from imgclust.plugins.pretrained import PretrainedEncoder

backbone, path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
images = np.load(path, mmap_mode="r")
encoder = PretrainedEncoder(backbone=backbone, weights="none", batch_size=32)
encoder.fit(images[:32])
encoder.transform(images[:32])  # warm-up: graph tracing and first allocations
rates = []
for _ in range(repeats):
    start = time.perf_counter()
    features = encoder.transform(images)
    rates.append(len(images) / (time.perf_counter() - start))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({"rates": rates, "peak_mib": peak, "dim": features.shape[1]}))
"""


def make_images(path: Path, count: int) -> None:
    """Random 224x224 RGB photos as a uint8 ``.npy``, written in slices (never all in memory)."""
    import numpy as np

    rng = np.random.default_rng(0)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 224, 224, 3))
    for start in range(0, count, 500):
        stop = min(count, start + 500)
        array[start:stop] = rng.integers(0, 256, size=(stop - start, 224, 224, 3), dtype=np.uint8)
    array.flush()


def measure(backbone: str, path: Path, repeats: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, backbone, str(path), str(repeats)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{backbone} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def cached_weights() -> list[str]:
    """ImageNet weight files already in the Keras cache (nothing is downloaded)."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    folder = home / "models"
    return sorted(p.name for p in folder.glob("*.h5")) if folder.is_dir() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-images", type=int, default=10_000)
    parser.add_argument("--memory-backbone", default="mobilenetv3-small")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        small = Path(work) / "speed.npy"
        make_images(small, args.images)
        for backbone in BACKBONES:
            found = measure(backbone, small, args.repeats)
            rows[backbone] = {
                "images_per_s": round(median(found["rates"]), 1),
                "feature_dim": found["dim"],
            }
            print(f"{backbone:20s} {rows[backbone]['images_per_s']:7.1f} images/s", flush=True)
        large = Path(work) / "memory.npy"
        make_images(large, args.memory_images)
        memory = measure(args.memory_backbone, large, 1)
    input_mib = args.memory_images * 224 * 224 * 3 / 2**20
    print(
        f"{args.memory_backbone} on {args.memory_images} images ({input_mib:.0f} MiB uint8 "
        f"memory map): peak RSS {memory['peak_mib']:.0f} MiB, "
        f"{median(memory['rates']):.1f} images/s"
    )
    weights = cached_weights()
    print("ImageNet weights in the Keras cache: " + (", ".join(weights) or "none"))
    save_results(
        "photos",
        {
            "images": args.images,
            "repeats": args.repeats,
            "backbones": rows,
            "memory": {
                "backbone": args.memory_backbone,
                "images": args.memory_images,
                "input_mib": round(input_mib),
                "peak_rss_mib": round(memory["peak_mib"]),
                "images_per_s": round(median(memory["rates"]), 1),
            },
            "imagenet_weights_cached": weights,
        },
    )
    lines = [
        f"`python benchmarks/photos.py` (224x224 RGB, batch 32, median of {args.repeats} passes "
        f"over {args.images} images; `weights=none` costs what ImageNet weights cost):",
        "",
        "| backbone | images/s | feature size |",
        "| --- | ---: | ---: |",
    ]
    lines += [
        f"| `{name}` | {row['images_per_s']:.1f} | {row['feature_dim']} |"
        for name, row in rows.items()
    ]
    lines += [
        "",
        f"Encoding {args.memory_images:,} images ({input_mib:,.0f} MiB as a uint8 memory map) "
        f"with `{args.memory_backbone}` peaked at {memory['peak_mib']:,.0f} MiB resident, a "
        "figure that counts the memory-mapped pages read; the images are read a batch at a time "
        "and never copied whole.",
        "",
        f"Load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(a shared machine: rates are lower bounds).",
    ]
    update_doc_section("photos", "\n".join(lines))


if __name__ == "__main__":
    main()
