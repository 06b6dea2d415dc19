"""Named run configurations: the article's pipeline, the baselines and the stronger recipes.

``imgclust list recipes`` shows what each runs and what it scored on the benchmark sets (from
``recipes_measured.json``, which ``benchmarks/recipe_figures.py`` writes from the benchmarks'
results); ``docs/benchmarks.md`` shows every run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from imgclust.kit import hookimpl

#: What a recipe with a UMAP stage costs once: numba compiles UMAP's code on the first run on a
#: machine and keeps it in the user's cache (measured on digits, 2 cores: fit umap 28.3 s on a
#: fresh cache, 4.8-5.0 s after).
UMAP_COMPILE = "about 20-25 s"
UMAP_FIRST_RUN = f"the first run on a machine also compiles UMAP ({UMAP_COMPILE}, once)"

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

#: The article's autoencoder as published (937 parameters, 3 epochs), fit on all the images, then
#: N2D's last two steps on its 98-number codes: UMAP to 10 dimensions with min_dist 0 and a
#: full-covariance Gaussian mixture. What UMAP and a mixture add to the article's own features.
ARTICLE_UMAP_GMM = {
    "dataset": {"name": "mnist"},
    "split": "all",
    "encoder": [
        {"name": "conv-ae"},
        {"name": "umap", "n_components": 10, "n_neighbors": 20, "min_dist": 0.0},
    ],
    "clusterer": {"name": "gmm", "n_clusters": 10, "covariance_type": "full"},
}

#: N2D (McConville et al.): a DEC-style dense autoencoder, UMAP to 10 dimensions with
#: min_dist 0, then a Gaussian mixture with full covariance. The paper trains 1000 epochs; 25
#: keep the recipe to minutes on a CPU.
N2D = {
    "dataset": {"name": "mnist"},
    "split": "all",
    "encoder": [
        {
            "name": "dense-ae",
            "dims": [500, 500, 2000],
            "code_size": 10,
            "epochs": 25,
            "batch_size": 256,
        },
        {"name": "umap", "n_components": 10, "n_neighbors": 20, "min_dist": 0.0},
    ],
    "clusterer": {"name": "gmm", "n_clusters": 10, "covariance_type": "full"},
}

#: The best on MNIST without a network: deskewed pixels (neighbours are more often the same
#: digit), PCA to 50, UMAP to 10 dimensions with min_dist 0, a full-covariance Gaussian mixture
#: whose best of several starts is kept by likelihood (never by labels), which guards against a
#: bad start.
DESKEW_UMAP_GMM = {
    "dataset": {"name": "mnist"},
    "split": "all",
    "encoder": [
        {"name": "deskew"},
        {"name": "pca", "n_components": 50},
        {"name": "umap", "n_components": 10, "n_neighbors": 10, "min_dist": 0.0},
    ],
    "clusterer": {"name": "gmm", "n_clusters": 10, "covariance_type": "full", "n_init": 5},
}


#: Photos: ImageNet features of whole photos (padded to a square, aspect kept), then
#: DeepCluster's treatment of CNN features: PCA with whitening, then k-means. Every stage saves
#: as plain arrays, so predicting new photos needs no --trust. Set k for the collection.
PHOTOS = {
    "dataset": {"name": "image-folder", "mode": "rgb", "size": [224, 224], "fit": "pad"},
    "split": "all",
    "encoder": [
        {"name": "pretrained", "backbone": "efficientnetv2-b0"},
        {"name": "pca", "n_components": 128, "whiten": True},
    ],
    "clusterer": {"name": "kmeans", "n_clusters": 10},
}

#: PCA, UMAP and a Gaussian mixture as above but on plain pixels: no dataset-specific step.
UMAP_GMM: dict[str, Any] = {
    "dataset": {"name": "mnist"},
    "split": "all",
    "encoder": [
        {"name": "pca", "n_components": 50},
        {"name": "umap", "n_components": 10, "n_neighbors": 10, "min_dist": 0.0},
    ],
    "clusterer": {"name": "gmm", "n_clusters": 10, "covariance_type": "full", "n_init": 5},
}

#: PCA, UMAP and a Gaussian mixture as above but on plain pixels (nothing digit-specific), then
#: the self-label refiner: a small CNN trained with shifts, rotations and zooms on the 80% of
#: each cluster nearest its centre relabels every image and assigns new ones.
UMAP_GMM_SELFLABEL = {**UMAP_GMM, "refiner": [{"name": "self-label"}]}

#: PCA, UMAP and a Gaussian mixture, then the self-label refiner in its recluster mode: twice a
#: small CNN (one convolution per block, a 256-wide feature layer) learns the clusters with
#: shifts, rotations and zooms, and the images are clustered again in its features (UMAP and a
#: Gaussian mixture), which have learnt what those changes leave alone; its last layer then
#: learns the final clusters and assigns new images. Nothing in it is specific to digits.
UMAP_GMM_RECLUSTER: dict[str, Any] = {
    **UMAP_GMM,
    "refiner": [
        {
            "name": "self-label",
            "recluster": True,
            "keep": 1.0,
            "rounds": 2,
            "epochs": 8,
            "convolutions": 1,
            "dense": 256,
        }
    ],
}

#: k-means on 50 principal components, then three rounds of the recluster refiner above: the
#: start only has to be better than chance, as the CNN's features, not the pixels, decide the
#: clusters; unlike a UMAP start it does not hand the CNN two kinds of image merged into one
#: cluster with full confidence.
PCA_KMEANS_RECLUSTER = {
    "dataset": {"name": "mnist"},
    "split": "all",
    "encoder": [{"name": "pca", "n_components": 50}],
    "clusterer": {"name": "kmeans", "n_clusters": 10},
    "refiner": [{**UMAP_GMM_RECLUSTER["refiner"][0], "rounds": 3}],
}

#: umap-gmm on features made invariant to the image set's own symmetries: ``sym-pca`` averages
#: the principal components over the mirror, flips or quarter turns that the run measured the
#: images to be invariant to (plain PCA where there are none, as on digits). Of the mixture's
#: 10 starts it keeps the likeliest unless another's clusters agree clearly more with each
#: point's nearest neighbours: UMAP's embedding can make a merge of two kinds of image and a split
#: of a third the likeliest fit.
SYM_UMAP_GMM = {
    **UMAP_GMM,
    "encoder": [{"name": "sym-pca", "n_components": 50}, UMAP_GMM["encoder"][1]],
    "clusterer": {**UMAP_GMM["clusterer"], "n_init": 10, "select": "neighbours"},
}

#: sym-umap-gmm, then the recluster refiner of umap-gmm-recluster, whose CNN augments with the
#: measured invariances (a random mirror where the set is mirror-symmetric, and so on); each
#: round's mixture keeps, of 10 starts, the one the neighbour check keeps, as the start's does.
#: A round trains at most 2,000 steps (its 8 epochs up to 32,000 images; on all 70,000 MNIST
#: images 3 epochs, not 8), so that large sets fit the time budget.
SYM_UMAP_GMM_RECLUSTER = {
    **SYM_UMAP_GMM,
    "refiner": [
        {
            **UMAP_GMM_RECLUSTER["refiner"][0],
            "starts": 10,
            "select": "neighbours",
            "max_steps": 2000,
        }
    ],
}

#: pca-kmeans-recluster on sym-pca: k-means on principal components averaged over the measured
#: symmetries, then three recluster rounds whose CNN augments with the measured invariances. On
#: images without a mirror, flip or turn symmetry (digits, MNIST) it is pca-kmeans-recluster.
SYM_PCA_KMEANS_RECLUSTER = {
    **PCA_KMEANS_RECLUSTER,
    "encoder": [{"name": "sym-pca", "n_components": 50}],
}

#: DCEC: k-means on 50 principal components gives the clusters to refine; the dec refiner
#: pretrains DCEC's published network (strided convolutions 32-64-128, a 10-number dense code,
#: a linear output), starts its centres with k-means on that code and fine-tunes it with a
#: clustering layer (reconstruction at weight 1, clustering at 0.1); its guard keeps the given
#: clusters unless fine-tuning beats them by neighbour information in the PCA features.
PCA_KMEANS_DCEC = {
    "dataset": {"name": "mnist"},
    "split": "all",
    "encoder": [{"name": "pca", "n_components": 50}],
    "clusterer": {"name": "kmeans", "n_clusters": 10},
    "refiner": [{"name": "dec", "autoencoder": "dcec"}],
}
#: The same with the article's own network (16-2 filters, its 7x7x2 grid code) in place of
#: DCEC's: the article's autoencoder followed by DCEC's clustering layer.
PCA_KMEANS_DCEC_ARTICLE = {
    **PCA_KMEANS_DCEC,
    "refiner": [{"name": "dec", "autoencoder": "article"}],
}

#: The recommendation for an image set nobody has tuned for (``imgclust list recipes`` says
#: so), chosen across image sets by mean rank (docs/benchmarks.md, "General recipes"): first on
#: every set of the benchmark (digits, plain, mirrored and turned MNIST, photo tiles), so at or
#: above ``umap-gmm`` on each; all 70,000 MNIST images in under 10 minutes on 2 CPU cores.
#: ``benchmarks/general.py`` applies the rule to the saved results, and a test checks that it
#: picks this name. ``sym-umap-gmm`` is the fast choice.
RECOMMENDED = "sym-umap-gmm-recluster"


def uses_umap(recipe: Mapping[str, Any]) -> bool:
    """Whether a recipe has a UMAP encoder, whose code is compiled on its first run."""
    encoders = recipe.get("encoder") or []
    return any(isinstance(e, Mapping) and e.get("name") == "umap" for e in encoders)


def measured_figures() -> dict[str, list[dict[str, Any]]]:
    """Each recipe's measured figures by name, from the file the benchmarks' results make."""
    text = resources.files("imgclust.plugins").joinpath("recipes_measured.json").read_text("utf-8")
    return dict(json.loads(text)["recipes"])


@hookimpl
def register_recipes(register):
    """Register the bundled recipes, each with its measured figures and, where it uses UMAP,
    the first run's compile time in its summary; the recommended one's summary says so first."""
    figures = measured_figures()

    def recipe(name: str, config: Mapping[str, Any], *, summary: str) -> None:
        if name == RECOMMENDED:
            summary = f"recommended for a new image set: {summary}"
        if uses_umap(config):
            summary = f"{summary}; {UMAP_FIRST_RUN}"
        register(name, config, summary=summary, measured=figures.get(name, ()))

    _register_all(recipe)


def _register_all(register: Any) -> None:
    """Every bundled recipe, by name, with its configuration and summary."""
    register(
        "article",
        ARTICLE,
        summary="the article's conv autoencoder (937 parameters, 3 epochs) fit on MNIST train, "
        "k-means 10 on the test set's 98-number codes",
    )
    register(
        "pixels-kmeans",
        PIXELS_KMEANS,
        summary="k-means with 10 clusters on raw pixels (the baseline)",
    )
    register(
        "article-umap-gmm",
        ARTICLE_UMAP_GMM,
        summary="the article's conv autoencoder as published, then UMAP to 10-d and a Gaussian "
        "mixture on its codes",
    )
    register(
        "n2d",
        N2D,
        summary="N2D: dense autoencoder (784-500-500-2000-10), UMAP to 10-d, Gaussian mixture",
    )
    register(
        "deskew-umap-gmm",
        DESKEW_UMAP_GMM,
        summary="for handwriting: deskewed pixels, PCA 50, UMAP to 10-d, Gaussian mixture "
        "(best of 5 starts by likelihood)",
    )
    register(
        "photos",
        PHOTOS,
        summary="a folder of photos: ImageNet-pretrained EfficientNetV2-B0 features, PCA 128 "
        "whitened, k-means (set dataset.path and clusterer.n_clusters)",
    )
    register(
        "umap-gmm",
        UMAP_GMM,
        summary="the baseline: PCA 50, UMAP to 10-d, Gaussian mixture (best of 5 starts by "
        "likelihood), no dataset-specific step",
    )
    register(
        "umap-gmm-selflabel",
        UMAP_GMM_SELFLABEL,
        summary="umap-gmm, then a small CNN trained with augmentation on each cluster's most "
        "central members relabels all and assigns new images",
    )
    register(
        "umap-gmm-recluster",
        UMAP_GMM_RECLUSTER,
        summary="umap-gmm, then twice: a small CNN learns the clusters with augmentation and "
        "the images are clustered again in its features; the CNN assigns new images",
    )
    register(
        "pca-kmeans-recluster",
        PCA_KMEANS_RECLUSTER,
        summary="k-means on PCA 50, then three times a small CNN learns the clusters and the "
        "images are clustered again in its features; no symmetry step, so below umap-gmm on "
        "turned images",
    )
    register(
        "sym-umap-gmm",
        SYM_UMAP_GMM,
        summary="the fast choice, no network: umap-gmm on PCA averaged "
        "over the symmetries measured in the images, its mixture's start checked by neighbours",
    )
    register(
        "sym-umap-gmm-recluster",
        SYM_UMAP_GMM_RECLUSTER,
        summary="sym-umap-gmm, then twice a small CNN trained with the measured invariances "
        "learns the clusters and the images are clustered again in its features",
    )
    register(
        "sym-pca-kmeans-recluster",
        SYM_PCA_KMEANS_RECLUSTER,
        summary="pca-kmeans-recluster on sym-pca: k-means on PCA averaged over the measured "
        "symmetries, then three recluster rounds with a CNN augmented by the invariances",
    )
    register(
        "pca-kmeans-dcec",
        PCA_KMEANS_DCEC,
        summary="DCEC: k-means on PCA 50 gives the clusters, DCEC's published network is "
        "fine-tuned with a clustering layer (clustering weight 0.1); kept only if it beats them",
    )
    # PCA_KMEANS_DCEC_ARTICLE (the article's 16-2 network in place of DCEC's) is not listed: it
    # never beat its k-means start (digits, 5 seeds; all of MNIST, 3; docs/benchmarks.md).
