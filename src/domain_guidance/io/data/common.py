"""What every dataset of the io data layer shares: sample keys, seeded flips, subsets, a key sampler.

A dataset item is addressed by a *key*, so that augmentation is a pure function of the key and
never of a global RNG or of the worker that loads it:

- ``i`` (int): sample ``i`` with no augmentation (unflipped; a latent dataset returns the mean).
- ``(i, seed)``: a ``torch.Generator`` seeded with ``seed`` first draws the flip coin (used when
  the dataset's ``random_flip`` is on), then any noise (posterior samples of a latent cache).
- ``(i, seed, flip)``: as above, but ``flip`` (bool) overrides the coin; ``seed`` may be None.

``SeededKeySampler`` yields ``(i, seed)`` keys for a ``DataLoader``: the global set of keys of an
epoch depends only on ``(seed, epoch)``, never on the batch size, the number of workers or ranks.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

SampleKey = Union[int, tuple[int, Union[int, None]], tuple[int, Union[int, None], Union[bool, None]]]


def parse_key(key: SampleKey, random_flip: bool) -> tuple[int, torch.Generator | None, bool]:
    """Resolve a key into ``(index, generator or None, flip)``; the coin is drawn before any noise."""
    if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.ndim == 0):
        return int(key), None, False
    if not isinstance(key, (tuple, list)) or len(key) not in (2, 3):
        raise TypeError(f"dataset key must be an int, (index, seed) or (index, seed, flip); got {key!r}")
    index, seed = int(key[0]), key[1]
    flip = key[2] if len(key) == 3 else None
    gen, coin = None, False
    if seed is not None:
        gen = torch.Generator().manual_seed(int(seed))
        coin = bool(torch.rand((), generator=gen) < 0.5)  # always drawn: noise stream never depends on flip
    if flip is None:
        flip = random_flip and coin
    return index, gen, bool(flip)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of a (..., H, W) tensor."""
    return torch.flip(x, dims=[-1])


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) array -> float32 (C, H, W) tensor in [-1, 1]."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)  # copy: PIL-backed arrays are read-only; (C, H, W)
    return x.float() / 127.5 - 1.0


def fingerprint_of(*parts: Any) -> str:
    """sha256 hex digest of JSON-able parts, numpy arrays and bytes, in order."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


class ImageDataset(Dataset):
    """Base of the image datasets: ``ds[key] -> (image (C, H, W) float32 in [-1, 1], label int)``.

    Subclasses set ``labels`` (N,) int64, ``class_names``, ``resolution``, ``channels``,
    ``unlabelled``, ``random_flip`` and implement ``load(index)`` (unflipped) and ``fingerprint``.
    """

    labels: np.ndarray
    class_names: list[str]
    resolution: int
    channels: int
    unlabelled: bool = False
    random_flip: bool = True

    def load(self, index: int) -> torch.Tensor:
        """Unflipped image ``index`` as (C, H, W) float32 in [-1, 1]."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """Changes whenever the images, labels or preprocessing change."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for logs and cache metadata."""
        return {"type": type(self).__name__, "count": len(self), "num_classes": self.num_classes,
                "class_names": list(self.class_names), "unlabelled": self.unlabelled,
                "resolution": self.resolution, "channels": self.channels}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} samples")
        return index % n

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int]:
        index, _, flip = parse_key(key, self.random_flip)
        index = self.check_index(index)
        x = self.load(index)  # (C, H, W)
        return (hflip(x) if flip else x), int(self.labels[index])


class DatasetView(ImageDataset):
    """A subset of ``base`` (``indices`` into it) with new labels and class names."""

    def __init__(self, base: ImageDataset, indices: np.ndarray, labels: np.ndarray, class_names: Sequence[str]):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.labels, self.class_names = np.asarray(labels, dtype=np.int64), list(class_names)
        if len(self.indices) != len(self.labels):
            raise ValueError(f"DatasetView: {len(self.indices)} indices but {len(self.labels)} labels")
        self.resolution, self.channels = base.resolution, base.channels
        self.unlabelled, self.random_flip = base.unlabelled, base.random_flip

    def load(self, index: int) -> torch.Tensor:
        return self.base.load(int(self.indices[index]))

    @property
    def fingerprint(self) -> str:
        return fingerprint_of("view", self.base.fingerprint, self.indices, self.labels, self.class_names)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base": self.base.describe()}


def select_indices(labels: np.ndarray, *, classes: Sequence[int] | None = None,
                   images_per_class: int | None = None, split: str = "all", test_fraction: float = 0.2,
                   split_seed: int = 0, seed: int = 0, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Choose samples by class, split and per-class limit; returns ``(indices, new_labels)``.

    ``classes`` are original label ids, relabelled ``0..K-1`` in the given order (default: all,
    in order). ``split``: "all", "train" or "test"; per class, a permutation seeded by
    ``(split_seed, class id)`` puts ``round(test_fraction * n)`` samples in "test" and the rest in
    "train", so splits are disjoint and do not depend on which other classes are chosen.
    ``groups`` (N,): samples with the same group id (e.g. exact duplicates) land in the same split;
    the test split then takes whole groups until it reaches its quota (it may exceed it by a group).
    ``images_per_class`` keeps a subset of the chosen split drawn with ``(seed, class id)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    present = sorted(set(labels.tolist()))
    classes = present if classes is None else [int(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} contain duplicates")
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"classes {missing} not in the dataset; expected ids among {present}")
    if split not in ("all", "train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test'; got {split!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}")
    out_idx, out_lab = [], []
    for new, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        if split != "all":
            ids, counts = np.unique(groups[idx], return_counts=True)
            perm = np.random.default_rng([split_seed, c]).permutation(len(ids))
            ids, counts = ids[perm], counts[perm]
            n_test = int(round(test_fraction * len(idx)))
            in_test = np.isin(groups[idx], ids[np.cumsum(counts) - counts < n_test])  # whole groups
            idx = idx[in_test] if split == "test" else idx[~in_test]
        if images_per_class is not None:
            if images_per_class > len(idx):
                raise ValueError(f"images_per_class={images_per_class} but class {c} has only {len(idx)} "
                                 f"images in split {split!r}")
            idx = np.sort(np.random.default_rng([seed, c]).permutation(idx)[:images_per_class])
        out_idx.append(idx)
        out_lab.append(np.full(len(idx), new, dtype=np.int64))
    return np.concatenate(out_idx), np.concatenate(out_lab)


class SeededKeySampler(Sampler):
    """Yields ``(index, seed)`` keys: a shuffled (or ordered) epoch with one seed per sample.

    The permutation and the per-sample seeds come from ``numpy.random.default_rng([seed, epoch])``;
    with ``world_size`` ranks, rank ``r`` takes positions ``r, r + world_size, ...`` of the padded
    epoch order. ``set_epoch(epoch, start)`` selects the epoch and skips this rank's first ``start``
    keys (exact resume).
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if num_samples <= 0:
            raise ValueError(f"SeededKeySampler needs num_samples > 0; got {num_samples}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def epoch_keys(self) -> list[tuple[int, int]]:
        """All keys of this rank for the current epoch (before skipping ``start``)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        seeds = rng.integers(0, 2**62, size=self.num_samples)  # seeds[i] belongs to sample i
        total = math.ceil(self.num_samples / self.world_size) * self.world_size
        order = np.resize(order, total)  # pad by wrapping so every rank gets the same count
        return [(int(i), int(seeds[i])) for i in order[self.rank::self.world_size]]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.epoch_keys()[self.start:])

    def __len__(self) -> int:
        return max(0, math.ceil(self.num_samples / self.world_size) - self.start)
