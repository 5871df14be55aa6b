"""Scores of one image set in the demo: FID and KID on FID-Inception features, the judge's metrics.

Sample sets and the real floor sets go through the same ``Scorer``, so a floor is measured exactly
like the methods it sits beside. Inception features are cached by image content under ``cache``.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...io.atomic import atomic_path
from ..metrics import frechet_distance_from_features, kid
from ..metrics.intra_class import defined, intra_class_fd, intra_class_kid
from . import classifier as judge


def image_sha(images: np.ndarray) -> str:
    """sha256 of an image array's bytes."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def inception_features(extractor: Any, images: np.ndarray, cache: Path | None = None,
                       progress: bool = False) -> np.ndarray:
    """(N, 2048) FID-Inception pool3 features of uint8 NHWC images; cached in ``cache`` if given."""
    from ..metrics import compute_stats

    sha = image_sha(images)
    # the extractor decides the features too: its weights and its path (folded fast path or reference)
    extractor_id = f"{getattr(extractor, 'weights_sha256', type(extractor).__name__)}/fast={getattr(extractor, 'fast', None)}"
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if (z["n"] == len(images) and z["sha"] == sha and "extractor" in z
                    and str(z["extractor"]) == extractor_id):
                return z["features"]
    with warnings.catch_warnings():  # N < 2048 is expected here: FID is compared at equal N only
        warnings.filterwarnings("ignore", message="only .* images for", category=RuntimeWarning)
        feats = compute_stats(images, extractor, 50, keep_features=True, progress=progress).features
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, features=feats, n=len(images), sha=sha, extractor=extractor_id)
    return feats


@dataclass
class Scorer:
    """Scores uint8 NHWC image sets against one reference set.

    ``inception`` None: no FID / KID (judge metrics only). ``cache``: folder of per-set Inception
    feature files ``inception-<sha>.npz`` (a rerun reuses them). ``ref_labels`` (N_ref,) class
    indices 0..K-1 of the reference: adds the intra-class metrics (``intra_*``: per class, mean over
    classes), on the judge's features and, with Inception, FID / KID (when every class has >= 2 images).
    ``exact_domain``: (N,) bool in-domain of uint8 images, measured exactly (glyph targets: the shape's hue in the
    blue band); adds ``domain_exact``, the in-domain share.
    """

    clf: judge.SmallCNN
    target_classes: Sequence[int]
    ref_judge: np.ndarray  # (N_ref, 128) judge features of the reference
    inception: Any | None = None
    ref_inception: np.ndarray | None = None  # (N_ref, 2048)
    kid_subsets: int = 100
    cache: Path | None = None
    ref_labels: np.ndarray | None = None  # (N_ref,)
    exact_domain: Callable[[np.ndarray], np.ndarray] | None = None

    def feature_path(self, images: np.ndarray) -> Path | None:
        return None if self.cache is None else self.cache / f"inception-{image_sha(images)[:16]}.npz"

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Metrics of one set; ``labels`` (N,) are the requested (samples) or true (real) class indices 0..K-1."""
        m: dict[str, Any] = judge.domain_metrics(self.clf, images, labels, self.target_classes, self.ref_judge,
                                                 self.kid_subsets, self.ref_labels)
        if self.exact_domain is not None:
            m["domain_exact"] = float(np.mean(self.exact_domain(images)))
        if self.inception is not None and self.ref_inception is not None:
            path = self.feature_path(images)
            feats = inception_features(self.inception, images, path)  # (N, 2048)
            k = kid(self.ref_inception, feats, n_subsets=self.kid_subsets)
            m.update(fid=frechet_distance_from_features(feats, self.ref_inception, method="svd"),
                     kid=k["kid_mean"], kid_subset_std=k["kid_std"], kid_subset_size=k["kid_subset_size"],
                     inception_features=None if path is None else str(path))
            classes = range(len(self.target_classes))
            if self.ref_labels is not None and defined(self.ref_labels, labels, classes):
                m.update(intra_fid=intra_class_fd(self.ref_inception, self.ref_labels, feats, labels, classes),
                         intra_kid=intra_class_kid(self.ref_inception, self.ref_labels, feats, labels, classes,
                                                   n_subsets=self.kid_subsets))
        return m
