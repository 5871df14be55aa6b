"""Feature statistics of an image set, and a cache of them that refuses mismatched protocols.

A statistics file is an ``.npz`` with ``mu`` (D,) and ``sigma`` (D, D) in float64, optionally
``features`` (N, D) float32 (needed by PRDC and KID), and ``protocol``: a JSON string with the
extractor's name, weights sha256, resize, preprocessing and feature dim, plus the image count, image
shape and the sha256 of the image set (its uint8 bytes in order). Files are written
atomically: temp file in the same folder, fsync, ``os.replace``.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable

import numpy as np
import torch

from domain_guidance.pipelines.metrics.extractor import FeatureExtractor
from domain_guidance.pipelines.metrics.frechet import GaussianAccumulator
from domain_guidance.pipelines.metrics.images import ImageHasher, ImageSet, open_images
from domain_guidance.io.atomic import atomic_path

STATS_FORMAT = 1
# Protocol fields that identify the features (compared whenever cached stats are reused).
EXTRACTOR_FIELDS = ("extractor", "weights_sha256", "resize", "preprocess", "feature_dim", "precision")
# Fields that identify the image set (compared when the images are at hand).
IMAGE_FIELDS = ("num_images", "image_shape", "image_set_sha256")
# The value a protocol field has when absent: fp32 statistics (the reference protocol) leave precision out.
FIELD_DEFAULTS = {"precision": "fp32"}


def extractor_fields(protocol: dict[str, Any]) -> dict[str, Any]:
    """Every field of ``EXTRACTOR_FIELDS`` that ``protocol`` has, precision always (fp32 where absent)."""
    return {k: protocol.get(k, FIELD_DEFAULTS.get(k)) for k in EXTRACTOR_FIELDS if k in protocol or k in FIELD_DEFAULTS}


@dataclass
class FeatureStats:
    """Gaussian statistics (and optionally the features) of one image set under one protocol."""

    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    protocol: dict[str, Any]
    features: np.ndarray | None = None  # (N, D) float32

    @property
    def num_images(self) -> int:
        return int(self.protocol["num_images"])


def compute_stats(images: ImageSet | Any, extractor: FeatureExtractor, batch_size: int = 50,
                  keep_features: bool = True, progress: bool = False) -> FeatureStats:
    """Run ``extractor`` over an image set (anything ``open_images`` takes) and summarise it."""
    images = open_images(images)
    acc, hasher = GaussianAccumulator(), ImageHasher()
    kept: list[np.ndarray] = []
    batches: Iterable[torch.Tensor] = images.batches(batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-images.num_images // batch_size), desc=extractor.name)
    for batch in batches:  # (B, C, H, W) uint8
        hasher.update(batch)
        feats = extractor(batch)  # (B, D)
        acc.update(feats)
        if keep_features:
            kept.append(feats.numpy().astype(np.float32))
    if hasher.count != images.num_images:
        raise RuntimeError(f"{images.source}: expected {images.num_images} images, read {hasher.count}")
    mu, sigma = acc.finalize()
    protocol = {**extractor.protocol(), "num_images": images.num_images,
                "image_shape": [images.channels, images.height, images.width],
                "image_set_sha256": hasher.hexdigest(), "source": images.source,
                "stats_format": STATS_FORMAT}
    feats_all = np.concatenate(kept) if keep_features else None
    return FeatureStats(mu, sigma, protocol, feats_all)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(fh)`` so that readers never see a partial file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
    return Path(path)


def save_stats(path: str | Path, stats: FeatureStats) -> Path:
    """Save statistics to an ``.npz`` atomically; returns the path."""
    arrays: dict[str, np.ndarray] = {
        "mu": np.asarray(stats.mu, np.float64), "sigma": np.asarray(stats.sigma, np.float64),
        "protocol": np.array(json.dumps(stats.protocol, sort_keys=True)),
    }
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def is_stats_file(path: str | Path) -> bool:
    """True for an ``.npz`` written by ``save_stats`` (has ``mu``, ``sigma`` and ``protocol``)."""
    path = Path(path)
    if not (path.is_file() and path.suffix == ".npz"):
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"mu", "sigma", "protocol"} <= set(z.files)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):  # unreadable: the image reader names the fault
        return False


def protocol_differences(cached: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Human-readable list of the fields of ``expected`` whose value differs in ``cached``."""
    out = []
    for key, want in expected.items():
        have = cached.get(key, FIELD_DEFAULTS.get(key, "<missing>"))  # bf16 statistics never pass as fp32 ones
        if json.loads(json.dumps(have)) != json.loads(json.dumps(want)):
            out.append(f"{key}: cached {have!r} != requested {want!r}")
    return out


def load_stats(path: str | Path, expected: dict[str, Any] | None = None,
               need_features: bool = False) -> FeatureStats:
    """Load statistics; refuse them if a field of ``expected`` differs (the error lists which)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statistics file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = {"mu", "sigma", "protocol"} - set(z.files)
        if missing:
            raise ValueError(f"{path} is not a statistics file (missing {sorted(missing)}); "
                             "an image .npz holds 'arr_0' instead")
        protocol = json.loads(str(z["protocol"]))
        stats = FeatureStats(z["mu"], z["sigma"], protocol,
                             z["features"] if "features" in z.files else None)
    if expected:
        diffs = protocol_differences(protocol, expected)
        if diffs:
            raise ValueError(f"cached statistics {path} were computed under another protocol; "
                             "delete the file or pick another cache. Differences: " + "; ".join(diffs))
    if need_features and stats.features is None:
        raise ValueError(f"{path} holds no per-image features, which PRDC and KID need; "
                         "recompute it with keep_features=True")
    return stats


def cached_stats(cache_path: str | Path, images: ImageSet | Any, extractor: FeatureExtractor,
                 batch_size: int = 50, need_features: bool = True, progress: bool = False) -> FeatureStats:
    """Load ``cache_path`` if it matches this extractor and image set, else compute and save it.

    A cache computed for the same file name under another protocol (other weights, other
    preprocessing, other images) is refused, not overwritten.
    """
    images = open_images(images)
    cache_path = Path(cache_path)
    if cache_path.exists():
        from domain_guidance.pipelines.metrics.images import image_set_sha256

        expected = extractor_fields(extractor.protocol())
        expected.update(num_images=images.num_images,
                        image_shape=[images.channels, images.height, images.width],
                        image_set_sha256=image_set_sha256(images, batch_size))
        return load_stats(cache_path, expected, need_features)
    stats = compute_stats(images, extractor, batch_size, keep_features=True, progress=progress)
    save_stats(cache_path, stats)
    return stats
