"""A scikit-learn clusterer whose kept start is checked by neighbour information.

Likelihood (a Gaussian mixture's) and inertia (k-means') can prefer a start that merges two
groups and splits a third, when that fits the points' shape better; a start whose clusters agree
clearly more with each point's nearest neighbours keeps dense groups whole instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgclust.kit.criteria import neighbour_information, neighbour_pairs
from imgclust.kit.sklearn import SklearnClusterer

#: how much more neighbour information (a share of the likeliest start's) another start needs
#: to be kept instead: differences below 1% were near-equal partitions (digits), while merging
#: two groups and splitting a third cost 1.3-4% (MNIST, photo tiles; docs/benchmarks.md)
MARGIN = 0.01
#: how a clusterer's kept start is chosen: ``likelihood`` (its own score) or ``neighbours``
SELECT = ("likelihood", "neighbours")


class NeighbourSelected(SklearnClusterer):
    """Fits ``params[starts_param]`` single-start models, each with its own seed drawn from
    ``params[seed_param]``, and keeps the one with the best ``score`` (likelihood, or minus
    inertia) unless another has more than ``margin`` (a share) more neighbour information: then
    the one with the most. The kept model is a plain fitted estimator, so it saves, loads and
    predicts like any other.

    ``starts_`` records each start's seed, neighbour information and score, and which was kept.
    """

    def __init__(
        self,
        make: Any,
        params: dict[str, Any] | None = None,
        *,
        starts_param: str = "n_init",
        seed_param: str = "random_state",
        margin: float = MARGIN,
        **options: Any,
    ) -> None:
        super().__init__(make, params, **options)
        self.starts_param = starts_param
        self.seed_param = seed_param
        self.margin = margin
        self.starts_: list[dict[str, Any]] = []

    def _fit(self, features: np.ndarray) -> tuple[Any, np.ndarray]:
        """Fit each start on the (checked) features and keep one as the class says."""
        seed = self.params.get(self.seed_param)
        starts = max(1, int(self.params.get(self.starts_param) or 1))
        pairs = neighbour_pairs(features, 0 if seed is None else int(seed))
        fitted: list[tuple[Any, np.ndarray]] = []
        self.starts_ = []
        for start_seed in np.random.SeedSequence(seed).generate_state(starts):
            overrides = {self.starts_param: 1, self.seed_param: int(start_seed)}
            estimator = self._build(len(features), **overrides)
            labels = np.asarray(estimator.fit_predict(features), dtype=np.int64)
            fitted.append((estimator, labels))
            self.starts_.append(
                {
                    "seed": int(start_seed),
                    "neighbour_information": neighbour_information(labels, pairs),
                    "score": float(estimator.score(features)),
                    "kept": False,
                }
            )
        kept = kept_start(self.starts_, self.margin)
        self.starts_[kept]["kept"] = True
        return fitted[kept]


def kept_start(starts: list[dict[str, Any]], margin: float = MARGIN) -> int:
    """Index of the start to keep: the best ``score``, unless some start's
    ``neighbour_information`` beats its by more than ``margin`` of it; then the most
    information (equal information: the better score)."""
    likeliest = max(range(len(starts)), key=lambda i: starts[i]["score"])
    bar = starts[likeliest]["neighbour_information"] * (1 + margin)
    clearer = [i for i, start in enumerate(starts) if start["neighbour_information"] > bar]
    if not clearer:
        return likeliest
    return max(clearer, key=lambda i: (starts[i]["neighbour_information"], starts[i]["score"]))
