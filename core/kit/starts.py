"""A scikit-learn clusterer whose best start is chosen by neighbour information.

Likelihood (a Gaussian mixture's) and inertia (k-means') can prefer a start that merges two
groups and splits a third, when that fits the points' shape better; the start whose clusters
agree most with each point's nearest neighbours keeps dense groups whole instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgclust.kit.criteria import neighbour_information, neighbour_pairs
from imgclust.kit.sklearn import PROBE_ROWS, SklearnClusterer, check_features, writable

#: neighbour information this close (nats) counts as a tie, broken by the estimator's own score
TIE = 1e-9


class NeighbourSelected(SklearnClusterer):
    """Fits ``params[starts_param]`` single-start models, each with its own seed drawn from
    ``params[seed_param]``, and keeps the one with the most neighbour information (ties: the
    estimator's ``score``, likelihood or minus inertia). The kept model is a plain fitted
    estimator, so it saves, loads and predicts like any other.

    ``starts_`` records each start's seed, neighbour information and score.
    """

    def __init__(
        self,
        make: Any,
        params: dict[str, Any] | None = None,
        *,
        starts_param: str = "n_init",
        seed_param: str = "random_state",
        **options: Any,
    ) -> None:
        super().__init__(make, params, **options)
        self.starts_param = starts_param
        self.seed_param = seed_param
        self.starts_: list[dict[str, float]] = []

    def fit_predict(self, features: np.ndarray) -> np.ndarray:
        """Fit each start on (N, D) features, keep the best by neighbour information, and
        return its label for each row."""
        check_features(features, self.n_clusters)
        if self.check is not None:
            self.check(features)
        features = writable(features)
        seed = self.params.get(self.seed_param)
        starts = int(self.params.get(self.starts_param) or 1)
        pairs = neighbour_pairs(features, 0 if seed is None else int(seed))
        best: tuple[float, float, Any, np.ndarray] | None = None
        self.starts_ = []
        for start_seed in np.random.SeedSequence(seed).generate_state(starts):
            overrides = {self.starts_param: 1, self.seed_param: int(start_seed)}
            estimator = self._build(len(features), **overrides)
            labels = np.asarray(estimator.fit_predict(features), dtype=np.int64)
            information = neighbour_information(labels, pairs)
            score = float(estimator.score(features))
            self.starts_.append(
                {"seed": int(start_seed), "neighbour_information": information, "score": score}
            )
            if best is None or _better(information, score, best[0], best[1]):
                best = (information, score, estimator, labels)
        assert best is not None  # starts >= 1
        self.estimator_, self.labels_ = best[2], best[3]
        self._probe = np.array(features[:PROBE_ROWS])
        return self.labels_


def _better(information: float, score: float, best_information: float, best_score: float) -> bool:
    """Whether a start beats the best so far: more neighbour information, or a tie and a higher
    score."""
    if abs(information - best_information) > TIE:
        return information > best_information
    return score > best_score
