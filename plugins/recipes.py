"""Named run configurations: the article's pipeline, the baselines and the stronger recipes."""

from __future__ import annotations

from imgclust.hookspecs import hookimpl

PIXELS_KMEANS = {
    "dataset": {"name": "mnist"},
    "split": "all",
    "encoder": [{"name": "flatten"}],
    "clusterer": {"name": "kmeans", "n_clusters": 10},
}

ARTICLE = {
    "dataset": {"name": "mnist"},
    "fit_split": "train",
    "validation_split": "test",
    "split": "test",
    "encoder": [{"name": "conv-ae"}],
    "clusterer": {"name": "kmeans", "n_clusters": 10},
}


@hookimpl
def register_recipes(register):
    register(
        "article",
        ARTICLE,
        summary="the article's conv autoencoder (937 parameters, 3 epochs) fit on MNIST train, "
        "k-means 10 on the test set's 98-number codes",
    )
    register("pixels-kmeans", PIXELS_KMEANS, summary="k-means with 10 clusters on raw pixels (the baseline)")
