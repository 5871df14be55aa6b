"""Real target images for the demo's floors: what a metric gives real data at the samples' N.

The pool is the part of the fine-tune's own data split (the target classes of the target dataset's train
split) that the judge never trains on (``reserved_for_floors``), without the fine-tuning images, and
without any image equal to a fine-tuning or reference image (animal-mnist has exact duplicates). Replicate i takes the i-th block of a seeded per-class
permutation of that pool, with the same class counts as the sample sets: the subsets of
different replicates are disjoint, so the floor has a spread like the samples do.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...io.atomic import atomic_path
from ...io.data import load_dataset
from ..training import resolve_config
from .config import DemoConfig


def _hashes(images: np.ndarray) -> np.ndarray:
    """(N,) content hashes of (N, ...) uint8 images."""
    return np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images])


# The judge (classifier.py) must never have trained on a floor image, or its metrics on the floor would be
# those of its own training data (too good). The train split is therefore cut in two by image content:
# an image whose sha1 read as an integer is < 11 mod 20 (about 55%) is kept for the floors, the judge
# trains on the rest. By content, so exact duplicates (animal-mnist has some) fall on one side.
FLOOR_SHARE = (11, 20)


def reserved_for_floors(images: np.ndarray) -> np.ndarray:
    """(N,) bool: which (N, R, R) uint8 train-split images are kept out of the judge's training for the floors."""
    keep, mod = FLOOR_SHARE
    return np.array([int(h, 16) % mod < keep for h in _hashes(images)], dtype=bool)


def target_data_overrides(cfg: DemoConfig) -> dict[str, Any]:
    """The fine-tune's data selection: the target classes, ``images_per_class`` images each."""
    return {"classes": list(cfg.target_classes), "images_per_class": cfg.images_per_class}


def _nhwc(images: Any) -> np.ndarray:
    """(N, R, R) or (N, R, R, C) uint8 -> (N, R, R, C); the same bytes, so content hashes do not change."""
    images = np.asarray(images)
    return images[..., None] if images.ndim == 3 else images


def target_data(cfg: DemoConfig, resolution: int) -> tuple[Any, Any]:
    """(fine-tuning images, their whole split): the data the demo's fine-tune trains on, as it selects it."""
    overrides = {**cfg.train_overrides, "data": {**cfg.train_overrides.get("data", {}), **target_data_overrides(cfg)}}
    d = resolve_config(cfg.target_preset, overrides=overrides).data
    kw = dict(resolution=resolution, channels=cfg.spec.channels, classes=d.classes, split=d.split,
              test_fraction=d.test_fraction, split_seed=d.split_seed)
    return (load_dataset(d.dataset, images_per_class=d.images_per_class, seed=d.subset_seed, **kw),
            load_dataset(d.dataset, **kw))


def floor_sets(cfg: DemoConfig, reference: np.ndarray, counts: Sequence[int], resolution: int,
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """One real set per seed replicate: (uint8 (N, R, R, C) images, (N,) labels 0..K-1), class k ``counts[k]`` times.

    Disjoint from the fine-tuning images and from ``reference`` (by content), and from each other.
    """
    train, pool = target_data(cfg, resolution)
    taken = set(_hashes(_nhwc(train.images)).tolist()) | set(_hashes(reference).tolist())
    images = _nhwc(pool.images)  # (M, R, R, C)
    labels = np.asarray(pool.labels)
    free = ~np.isin(_hashes(images), list(taken)) & reserved_for_floors(images)  # never seen by the judge
    reps = len(cfg.seeds)
    blocks: list[list[np.ndarray]] = [[] for _ in range(reps)]
    for k, n in enumerate(counts):
        idx = np.random.default_rng([0, k]).permutation(np.flatnonzero(free & (labels == k)))
        if len(idx) < n * reps:
            raise ValueError(
                f"the real floor needs {n} images of target class {cfg.target_classes[k]} per seed replicate "
                f"({reps} replicates: {n * reps}) outside the fine-tuning and reference images, but only {len(idx)} "
                "are left; lower samples or the number of seeds")
        for i in range(reps):
            blocks[i].append(idx[i * n:(i + 1) * n])
    out = []
    for block in blocks:
        sel = np.concatenate(block)  # class-sorted, like balanced sample labels
        out.append((np.ascontiguousarray(images[sel]), labels[sel].astype(np.int64)))
    return out


def save_real(path: Path, images: np.ndarray, labels: np.ndarray) -> str:
    """Write a real set as ``.npz`` (images, labels) atomically; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=images, labels=labels)
    return str(path)


def load_real(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a set written by ``save_real``."""
    with np.load(path) as z:
        return z["images"], z["labels"]
