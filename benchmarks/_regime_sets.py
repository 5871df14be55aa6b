"""The image sets and scoring of benchmarks/regime_search.py (not a benchmark by itself): the demo's reference
with its labels, the real floor sets, and the Scorer (judge metrics, marginal and intra-class; FID on request)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from domain_guidance.io.data import load_builtin
from domain_guidance.pipelines.demo import classifier as judge
from domain_guidance.pipelines.metrics.intra_class import intra_class_fd, intra_class_kid
from domain_guidance.pipelines.metrics.kid import kid

TARGET = [6, 7, 8, 9]
RES = 16


def floor_sets(n: int, replicates: int, classes: list[int] = TARGET) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real images outside the reference: ``replicates`` disjoint class-balanced sets of n.

    From the held-out test split when it has enough (the N = 100 floors of the search); for larger N,
    or for the source check, from the train split's floor pool (the images the demo's judge does not
    train on) minus every image any candidate fine-tunes on (``images_per_class`` 50 and 200) and minus
    exact duplicates of reference images.
    """
    if classes != TARGET or n // len(classes) * replicates > 100:
        return _train_floor_sets(n, replicates, classes)
    ds = load_builtin("animal-mnist", resolution=RES, channels=1, classes=TARGET, split="test")
    ref_idx = _reference_indices(ds.labels)
    rest = np.setdiff1d(np.arange(len(ds.labels)), ref_idx)
    per = n // len(TARGET)
    rng = np.random.default_rng(1)
    pools = [rng.permutation(rest[ds.labels[rest] == k]) for k in range(len(TARGET))]
    if any(len(p) < per * replicates for p in pools):
        raise ValueError(f"n={n} x {replicates} replicates needs {per * replicates} floor images per class, "
                         f"have {min(len(p) for p in pools)}")
    sets = []
    for r in range(replicates):
        idx = np.sort(np.concatenate([p[r * per:(r + 1) * per] for p in pools]))
        sets.append((np.ascontiguousarray(ds.images[idx][..., None]), ds.labels[idx]))
    return sets


def _train_floor_sets(n: int, replicates: int, classes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    from domain_guidance.pipelines.demo.config import DemoConfig
    from domain_guidance.pipelines.demo.floors import _hashes, reserved_for_floors, target_data

    ds = load_builtin("animal-mnist", resolution=RES, channels=1, classes=classes, split="train")
    taken = set(_hashes(reference(classes)[..., 0]).tolist())
    if classes == TARGET:
        for ipc in (50, 200):
            taken |= set(_hashes(np.asarray(target_data(DemoConfig(target="animal", images_per_class=ipc), RES)[0].images)).tolist())
    free = ~np.isin(_hashes(ds.images), list(taken)) & reserved_for_floors(ds.images)  # the judge never saw them
    per = n // len(classes)
    sets = []
    pools = [np.random.default_rng([1, k]).permutation(np.flatnonzero(free & (ds.labels == k)))
             for k in range(len(classes))]
    if any(len(q) < per * replicates for q in pools):
        raise ValueError(f"n={n} x {replicates} replicates needs {per * replicates} free train images per class, "
                         f"have {min(len(q) for q in pools)}")
    for r in range(replicates):
        idx = np.concatenate([q[r * per:(r + 1) * per] for q in pools])
        sets.append((np.ascontiguousarray(ds.images[idx][..., None]), ds.labels[idx]))
    return sets


def _reference_indices(labels: np.ndarray, n: int = 400, k_classes: int = len(TARGET)) -> np.ndarray:
    """The demo's reference subset (same rule as ``reference_images``: rng(0), per-class permutation)."""
    rng = np.random.default_rng(0)
    per = -(-n // k_classes)
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:per] for k in range(k_classes)])[:n]
    return np.sort(idx)


def reference(classes: list[int] = TARGET) -> np.ndarray:
    """uint8 (100 * K, 16, 16, 1) held-out test images of ``classes``: the demo's 400-image reference for the target."""
    return reference_with_labels(classes)[0]


def reference_with_labels(classes: list[int] = TARGET) -> tuple[np.ndarray, np.ndarray]:
    """``reference(classes)`` and its class indices 0..K-1 (N,)."""
    ds = load_builtin("animal-mnist", resolution=RES, channels=1, classes=classes, split="test")
    idx = _reference_indices(ds.labels, 100 * len(classes), len(classes))
    return np.ascontiguousarray(ds.images[idx][..., None]), ds.labels[idx]


class Scorer:
    """Judge metrics + KID/FD in the judge's 128-d features (+ FID-Inception when asked) against the reference."""

    def __init__(self, out: Path, classes: list[int] = TARGET) -> None:
        self.clf, self.clf_info = judge.train_classifier(out, RES, 4.0, 128, progress=False)
        # recorded in every scored row: a row scored by another judge (e.g. before the floor-pool rule) is rescored
        self.judge_id = json.dumps(self.clf_info, sort_keys=True)
        self.classes = classes
        self.ref, self.ref_labels = reference_with_labels(classes)  # (100 K, 16, 16, 1), (100 K,)
        self.ref_feats = judge.features(self.clf, judge.uint8_to_input(self.ref))
        self.out = out
        self._inception: Any = None
        self._fid_ref: np.ndarray | None = None

    def score(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Judge metrics; ``labels`` (N,) 0..K-1: requested (samples) or true (real images)."""
        m = judge.domain_metrics(self.clf, images, labels, self.classes, self.ref_feats)
        feats = judge.features(self.clf, judge.uint8_to_input(images))
        k = kid(self.ref_feats, feats, n_subsets=100, subset_size=1000, seed=0)
        return {"class_match": m["class_match"], "in_domain": m["in_domain"], "fd_judge": m["fd_classifier"],
                "kid_judge": k["kid_mean"], "kid_subset_size": k["kid_subset_size"], **self.intra(images, labels),
                "judge": self.judge_id}

    def intra(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The intra-class judge metrics (round 3): per class k, images labelled k vs reference images of k."""
        feats = judge.features(self.clf, judge.uint8_to_input(images))  # (N, 128)
        return {"intra_fd_judge": intra_class_fd(self.ref_feats, self.ref_labels, feats, labels),
                "intra_kid_judge": intra_class_kid(self.ref_feats, self.ref_labels, feats, labels)}

    def fid(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """FID-Inception and its intra-class version against the reference."""
        if self._inception is None:
            from domain_guidance.pipelines.metrics.inception import InceptionExtractor

            self._inception = InceptionExtractor(None, device="cpu")
            self._fid_ref = self._inception_features(self.ref)
        feats = self._inception_features(images)
        return {"fid": judge.frechet_from_features(feats, self._fid_ref),
                "intra_fid": intra_class_fd(self._fid_ref, self.ref_labels, feats, labels)}

    def _inception_features(self, images: np.ndarray) -> np.ndarray:
        """(N, 2048) pool3 features of uint8 NHWC images (N < 2048 expected: FID compared at equal N only)."""
        from domain_guidance.pipelines.metrics.stats import compute_stats

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="only .* images for", category=RuntimeWarning)
            return compute_stats(images, self._inception, 50, keep_features=True).features
