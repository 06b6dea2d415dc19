"""imgclust's pipeline and stages keep scikit-learn's estimator contract, checked by scikit-learn.

``parametrize_with_checks`` runs scikit-learn's own estimator checks over every bundled stage
that takes a table of numbers (the clusterers, and the encoders that also take features); the
checks an imgclust stage does not pass are listed with the reason, and docs/sklearn.md lists them
too (a test keeps the two in step).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone, is_clusterer
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score, make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import imgclust
from imgclust.errors import SettingsError
from imgclust.estimators import ClustererStage, EncoderStage, InvalidParameterError

DOC = Path(__file__).resolve().parents[1] / "docs" / "sklearn.md"

# Settings fitted to the checks' tiny tables (20-100 rows), as scikit-learn sets its own.
CHECKED = {
    ("clusterers", "kmeans"): {},
    ("clusterers", "minibatch-kmeans"): {},
    ("clusterers", "gmm"): {},
    ("clusterers", "hdbscan"): {"min_cluster_size": 5, "min_samples": 3},
    ("clusterers", "agglomerative"): {},
    ("clusterers", "dbscan"): {},
    ("clusterers", "spectral"): {"n_neighbors": 5, "n_clusters": 3},
    ("encoders", "pca"): {},
    ("encoders", "flatten"): {},
    ("encoders", "umap"): {"n_components": 2, "n_neighbors": 5},
}

#: Every stage: checks that construct the class bare (a stage is made by its plugin's factory,
#: ``imgclust.get_clusterer(name, **settings)``, and checks its settings when they are given).
EVERY_STAGE = {
    "check_parameters_default_constructible": "a stage is built by its plugin's factory, "
    "`imgclust.get_clusterer(name, **settings)`; its class has no parameters of its own",
    "check_do_not_raise_errors_in_init_or_set_params": "settings are checked when given, so a "
    "wrong one fails at once in one line, not later inside a run",
}
ONE_SAMPLE = {
    "check_fit2d_1sample": "one row is refused in a line that speaks of images, not samples",
}
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "kmeans": {**EVERY_STAGE, **ONE_SAMPLE},
    "minibatch-kmeans": {**EVERY_STAGE, **ONE_SAMPLE},
    "gmm": {**EVERY_STAGE, **ONE_SAMPLE},
    "hdbscan": {**EVERY_STAGE, **ONE_SAMPLE},
    "agglomerative": {**EVERY_STAGE, **ONE_SAMPLE},
    "dbscan": dict(EVERY_STAGE),
    "spectral": {**EVERY_STAGE, **ONE_SAMPLE},
    "pca": dict(EVERY_STAGE),
    "flatten": dict(EVERY_STAGE),
    "umap": {
        **EVERY_STAGE,
        **ONE_SAMPLE,
        "check_methods_sample_order_invariance": "UMAP places new points by approximate "
        "neighbours and a short optimisation, so a point's features depend on its batch",
        "check_methods_subset_invariance": "as above: UMAP's transform depends on the batch",
    },
}


def checked_stages() -> list[object]:
    stages = []
    for (kind, name), settings in CHECKED.items():
        make = imgclust.get_clusterer if kind == "clusterers" else imgclust.get_encoder
        stages.append(make(name, **settings))
    return stages


def expected_failures(stage: object) -> dict[str, str]:
    return EXPECTED_FAILURES[stage.name]  # type: ignore[attr-defined]


@parametrize_with_checks(checked_stages(), expected_failed_checks=expected_failures)
def test_scikit_learn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_every_bundled_table_stage_is_checked():
    registry = imgclust.get_registry()
    checked = {name for _, name in CHECKED}
    assert set(registry.names("clusterers")) <= checked
    images_only = {"conv-ae", "dense-ae", "deskew", "pretrained", "sym-pca"}
    assert set(registry.names("encoders")) == {n for k, n in CHECKED if k == "encoders"} | (
        images_only
    )


def test_the_docs_list_the_expected_failures():
    """docs/sklearn.md names each check a stage does not pass, with the same reason."""
    text = DOC.read_text(encoding="utf-8")
    for name, failures in EXPECTED_FAILURES.items():
        for check, reason in failures.items():
            assert check in text, check
            assert reason in " ".join(text.split()), reason
        assert f"`{name}`" in text


# The contract by hand, where the checks above cannot reach --------------------------------------
@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.images / 16 * 255).astype(np.uint8), data.target


def test_stages_are_scikit_learn_estimators_of_their_kind():
    encoder = imgclust.get_encoder("pca", n_components=5)
    clusterer = imgclust.get_clusterer("kmeans", n_clusters=4)
    assert isinstance(encoder, EncoderStage) and isinstance(encoder, imgclust.Stage)
    assert is_clusterer(clusterer) and is_clusterer(imgclust.Pipeline(["pca"], "kmeans"))
    assert encoder.get_params()["n_components"] == 5 and encoder.n_components == 5
    assert clusterer.set_params(n_clusters=6) is clusterer and clusterer.n_clusters == 6
    twin = clone(clusterer)
    assert twin is not clusterer and twin.instance is not clusterer.instance
    assert twin.get_params() == clusterer.get_params()


def test_set_params_checks_settings_as_set_does():
    clusterer = imgclust.get_clusterer("kmeans", n_clusters=4)
    with pytest.raises(InvalidParameterError, match="n_clusters") as caught:
        clusterer.set_params(n_clusters="many")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, SettingsError)
    with pytest.raises(ValueError, match="no setting 'k'"):
        clusterer.set_params(k=3)
    assert clusterer.n_clusters == 4  # a refused change leaves the stage as it was


def test_pipeline_parameters_name_stages_as_make_pipeline_does():
    pipeline = imgclust.Pipeline(["pca", "pca"], "kmeans", refiners=["self-label"])
    params = pipeline.get_params()
    assert {"encoders", "clusterer", "refiners"} <= set(params)
    assert "pca-1__n_components" in params and "pca-2__n_components" in params
    assert "clusterer__n_clusters" in params and "self-label__epochs" in params
    pipeline.set_params(**{"pca-2__n_components": 3, "clusterer__n_clusters": 7})
    assert pipeline.encoders[1].n_components == 3 and pipeline.clusterer.n_clusters == 7
    with pytest.raises(ValueError, match="no stage 'umap'"):
        pipeline.set_params(umap__n_components=2)
    pipeline.set_params(clusterer=imgclust.get_clusterer("gmm", n_clusters=3))
    assert pipeline.clusterer.name == "gmm" and pipeline.get_params()["clusterer__n_clusters"] == 3


def test_clone_makes_an_unfitted_pipeline_of_new_stages(digits):
    images, _ = digits
    pipeline = imgclust.Pipeline([imgclust.get_encoder("pca", n_components=8)], "kmeans")
    pipeline.fit(images[:300])
    twin = clone(pipeline)
    assert not twin.is_fitted and pipeline.is_fitted
    assert twin.encoders[0] is not pipeline.encoders[0]
    assert twin.get_params(deep=True).keys() == pipeline.get_params(deep=True).keys()
    assert twin.encoders[0].n_components == 8


def test_fit_takes_y_and_validation_by_keyword(digits):
    images, labels = digits
    pipeline = imgclust.Pipeline(["pca"], "kmeans")
    found = pipeline.fit_predict(images[:300], labels[:300], validation=images[300:400])
    assert found.shape == (300,)
    with pytest.warns(DeprecationWarning, match="validation="):
        pipeline.fit(images[:300], images[300:400])  # the old positional validation images


def test_a_pipeline_is_a_step_of_a_scikit_learn_pipeline(digits):
    _, labels = digits
    raw = load_digits().images  # 0..16: a scikit-learn step scales them into [0, 1]
    steps = make_pipeline(
        FunctionTransformer(sixteenths),
        imgclust.Pipeline([imgclust.get_encoder("pca", n_components=20)], "kmeans"),
    )
    found = steps.fit_predict(raw)
    assert adjusted_rand_score(labels, found) > 0.5
    assert np.array_equal(steps.predict(raw[:50]), found[:50])
    features = make_pipeline(FunctionTransformer(sixteenths), clone(steps[-1])).fit_transform(raw)
    assert features.shape == (len(raw), 20)


def sixteenths(images: np.ndarray) -> np.ndarray:
    """Digits' 0..16 as imgclust's [0, 1]."""
    return images / 16.0


def test_grid_search_over_a_pipeline_with_a_clustering_scorer(digits):
    images, labels = digits
    search = GridSearchCV(
        imgclust.Pipeline([imgclust.get_encoder("pca", n_components=20)], "kmeans"),
        {"clusterer__n_clusters": [3, 10]},
        scoring=make_scorer(adjusted_rand_score),
        cv=2,
    ).fit(images[:600], labels[:600])
    assert search.best_params_ == {"clusterer__n_clusters": 10}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.1
    assert search.best_estimator_.predict(images[600:610]).shape == (10,)


def test_loaded_pipelines_and_run_pipelines_have_the_face(digits, tmp_path):
    images, _ = digits
    pipeline = imgclust.Pipeline(["pca"], "kmeans").fit(images[:300])
    folder = pipeline.save(tmp_path / "saved")
    loaded = imgclust.load(folder)
    assert isinstance(loaded, imgclust.Pipeline) and isinstance(loaded.clusterer, ClustererStage)
    assert np.array_equal(loaded.predict(images[:20]), pipeline.predict(images[:20]))
    assert np.array_equal(
        loaded.clusterer.predict(loaded.transform(images[:20])),
        pipeline.clusterer.predict(pipeline.transform(images[:20])),
    )


def test_stages_pickle_for_parallel_search():
    """GridSearchCV(n_jobs=2) pickles estimators: every bundled table stage pickles."""
    for stage in checked_stages():
        again = pickle.loads(pickle.dumps(stage))
        assert again.get_params() == stage.get_params()


def test_a_plugin_method_scikit_learn_reads_otherwise_is_not_shown_through():
    """k-means's plugin scores samples with a mapping; scikit-learn's ``score_samples`` means an
    array, so the face has none and the instance keeps its own."""
    clusterer = imgclust.get_clusterer("kmeans")
    assert not hasattr(clusterer, "score_samples")
    assert callable(clusterer.instance.score_samples)
    assert re.search("kmeans", repr(clusterer))
