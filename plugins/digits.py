"""The ``digits`` dataset: scikit-learn's 1,797 8x8 handwritten digits (offline)."""

from __future__ import annotations

from typing import Any

from imgclust.kit import ImageSet, check_limit, hookimpl

TEST_SHARE = 0.2


class DigitsDataset:
    """scikit-learn's 8x8 digits as uint8 images; ``train`` and ``test`` are a fixed 80/20 split.

    Parameters
    ----------
    limit : int | None
        Keep only the first ``limit`` images of the split (quick experiments).
    """

    splits = ("all", "train", "test")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = check_limit(limit, "dataset 'digits'")

    def load(self, split: str = "all") -> Any:
        import numpy as np
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        labels = bunch.target.astype(np.int64)
        index = np.arange(len(images))
        cut = int(round(len(images) * (1 - TEST_SHARE)))
        index = {"all": index, "train": index[:cut], "test": index[cut:]}[split]
        if self.limit is not None:
            index = index[: self.limit]
        ids = [f"digits-{i}" for i in index]
        return ImageSet(images[index], labels[index], ids, [str(d) for d in range(10)])


@hookimpl
def register_datasets(register):
    register(
        "digits",
        DigitsDataset,
        summary="scikit-learn's 1,797 8x8 digits (offline, for demos and tests)",
    )
