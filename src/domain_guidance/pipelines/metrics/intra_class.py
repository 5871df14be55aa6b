"""Intra-class metrics of a class-conditional generator ("intra-FID", Miyato & Koyama 2018).

A marginal metric (FID, KID over the pooled sets) never looks at the label a sample was asked for:
a sample of the wrong class costs nothing if the pooled set looks right. The intra-class version
compares, for each class k, the samples asked for k with the real images of class k, and averages
the K values (unweighted). Any two-set metric on features can be used; FD and KID are given here.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .frechet import frechet_distance_from_features
from .kid import kid

PairMetric = Callable[[np.ndarray, np.ndarray], float]  # (reference (n_r, D), samples (n_s, D)) -> value


def intra_class(metric: PairMetric, ref: np.ndarray, ref_labels: np.ndarray, feats: np.ndarray,
                labels: np.ndarray, classes: Sequence[int] | None = None) -> dict[str, object]:
    """{"mean": unweighted mean over classes, "per_class": {k: value}, "counts": {k: (n_ref, n_samples)}}.

    ``ref`` (N_r, D) with ``ref_labels`` (N_r,), ``feats`` (N, D) with ``labels`` (N,): the requested
    labels of samples or the true labels of real images. ``classes``: the classes to average over
    (default: those of the reference); each needs at least 2 features on both sides.
    """
    ref_labels, labels = np.asarray(ref_labels), np.asarray(labels)
    if len(ref) != len(ref_labels) or len(feats) != len(labels):
        raise ValueError(f"features and labels differ in length: reference {len(ref)} vs {len(ref_labels)} labels, "
                         f"samples {len(feats)} vs {len(labels)} labels")
    classes = sorted(set(ref_labels.tolist())) if classes is None else list(classes)
    per_class, counts = {}, {}
    for k in classes:
        r, f = ref[ref_labels == k], feats[labels == k]  # (n_r_k, D), (n_k, D)
        if len(r) < 2 or len(f) < 2:
            raise ValueError(f"intra-class metric: class {k} has {len(r)} reference and {len(f)} sample features; "
                             "expected at least 2 of each (class-balanced sets with >= 2 per class)")
        per_class[int(k)] = float(metric(r, f))
        counts[int(k)] = (len(r), len(f))
    return {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class, "counts": counts}


def defined(ref_labels: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> bool:
    """Do both sides hold at least 2 features of every class (what ``intra_class`` needs)?"""
    ref_labels, labels = np.asarray(ref_labels), np.asarray(labels)
    return all((ref_labels == k).sum() >= 2 and (labels == k).sum() >= 2 for k in classes)


def intra_class_fd(ref: np.ndarray, ref_labels: np.ndarray, feats: np.ndarray, labels: np.ndarray,
                   classes: Sequence[int] | None = None) -> float:
    """Mean over classes of the exact Frechet distance (Gram-matrix route, fine for n_k << D)."""
    fd: PairMetric = lambda r, f: frechet_distance_from_features(f, r, method="svd")
    return float(intra_class(fd, ref, ref_labels, feats, labels, classes)["mean"])


def intra_class_kid(ref: np.ndarray, ref_labels: np.ndarray, feats: np.ndarray, labels: np.ndarray,
                    classes: Sequence[int] | None = None, n_subsets: int = 100, seed: int = 0) -> float:
    """Mean over classes of the unbiased KID (``n_subsets`` subsets of min(n_ref_k, n_k), metrics.kid)."""
    k_fn: PairMetric = lambda r, f: kid(r, f, n_subsets=n_subsets, seed=seed)["kid_mean"]
    return float(intra_class(k_fn, ref, ref_labels, feats, labels, classes)["mean"])
