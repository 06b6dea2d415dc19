"""What per-image scores cost on MNIST-70k: confidence and outliers, label review and image issues,
against the run they are part of (PCA 50 then k-means, the cheapest recipe, so the share is the
largest it gets) and against decoding the images.

    IMGCLUST_MNIST=path/to/mnist python benchmarks/after_scores.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save_results, update_doc_section  # noqa: E402


def timed(action: Any, *args: Any) -> tuple[float, Any]:
    """Seconds ``action(*args)`` took, and what it returned."""
    clock = time.perf_counter()
    result = action(*args)
    return time.perf_counter() - clock, result


def measure(repeats: int) -> dict[str, Any]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from imgclust.plugins.mnist import MnistDataset
    from imgclust.results.confidence import cluster_quality, image_scores
    from imgclust.results.image_issues import find_issues
    from imgclust.results.label_review import review_labels

    rows: dict[str, list[float]] = {}
    for _ in range(repeats):
        load, data = timed(MnistDataset(path=os.environ["IMGCLUST_MNIST"]).load, "all")
        images = np.asarray(data.images)
        flat = images.reshape(len(images), -1).astype(np.float32) / 255
        encode, features = timed(PCA(50, random_state=0).fit_transform, flat)
        cluster, labels = timed(KMeans(10, n_init=1, random_state=0).fit_predict, features)
        confidence, scores = timed(image_scores, features, labels)
        quality, _ = timed(cluster_quality, labels, scores)
        given = np.asarray(data.labels).copy()
        rng = np.random.default_rng(0)
        flipped = rng.choice(len(given), len(given) // 20, replace=False)
        given[flipped] = (given[flipped] + rng.integers(1, 10, len(flipped))) % 10
        review, ranked = timed(review_labels, features, labels, given)
        recall = float(np.isin(flipped, ranked.order[: len(given) // 10]).mean())
        issues, _ = timed(find_issues, images)
        for key, value in {
            "load": load, "encode": encode, "cluster": cluster, "confidence": confidence + quality,
            "label review": review, "issues": issues,
        }.items():  # fmt: skip
            rows.setdefault(key, []).append(value)
    figures = {key: median(values) for key, values in rows.items()}
    return {**figures, "flipped labels in the review's top 10%": recall}


def markdown(figures: dict[str, Any]) -> str:
    run = figures["load"] + figures["encode"] + figures["cluster"]
    lines = [
        "| step | seconds (median) | share of a PCA + k-means run |",
        "| --- | ---: | ---: |",
    ]
    for key in ("load", "encode", "cluster", "confidence", "label review", "issues"):
        lines.append(f"| {key} | {figures[key]:.2f} | {100 * figures[key] / run:.1f}% |")
    share = figures["flipped labels in the review's top 10%"]
    lines.append("")
    lines.append(
        f"With 5% of the labels flipped at random (seed 0), the label review in these features "
        f"ranks {share:.1%} of the flipped images in its top 10%."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("IMGCLUST_MNIST"):
        raise SystemExit("set IMGCLUST_MNIST to a folder with MNIST")
    figures = measure(args.repeats)
    save_results("after_scores", {"repeats": args.repeats, "seconds": figures})
    print(markdown(figures))
    update_doc_section("after-scores", markdown(figures))


if __name__ == "__main__":
    main()
