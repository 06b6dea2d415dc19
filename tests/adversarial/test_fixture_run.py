"""The tampering fixture itself: a copied run loads and predicts before anyone changes it."""

from __future__ import annotations

import numpy as np


def test_a_copied_run_predicts_its_own_images(run_copy):
    from sklearn.datasets import load_digits

    import imgclust

    images = (load_digits().images[:20] * (255 / 16)).astype(np.uint8)[..., None]
    labels = imgclust.load(run_copy).predict(images)
    assert labels.shape == (20,) and labels.min() >= 0
