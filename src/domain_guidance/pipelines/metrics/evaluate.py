"""``evaluate``: score a sample set against a reference set (the API behind ``dog evaluate``)."""
from __future__ import annotations

import hashlib
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from domain_guidance.pipelines.metrics.extractor import FeatureExtractor
from domain_guidance.pipelines.metrics.frechet import frechet_distance
from domain_guidance.pipelines.metrics.images import ImageSet, image_set_sha256, open_images
from domain_guidance.pipelines.metrics.kid import kid
from domain_guidance.pipelines.metrics.prdc import prdc
from domain_guidance.pipelines.metrics.results import write_result
from domain_guidance.pipelines.metrics.stats import (
    FeatureStats, cached_stats, compute_stats, extractor_fields, is_stats_file, load_stats, protocol_differences,
)

# metric name -> (extractor key, kind)
METRICS: dict[str, tuple[str, str]] = {
    "fid": ("inception", "fd"), "kid": ("inception", "kid"), "prdc": ("inception", "prdc"),
    "fd_dinov2": ("dinov2", "fd"), "kid_dinov2": ("dinov2", "kid"), "prdc_dinov2": ("dinov2", "prdc"),
}


def _build_extractor(key: str, inception_weights: str | Path | None, dinov2_model: str | Path,
                     dinov2_clean_resize: bool, device: str, precision: str = "fp32") -> FeatureExtractor:
    if key == "inception":
        from domain_guidance.pipelines.metrics.inception import InceptionExtractor

        return InceptionExtractor(inception_weights, device=device, precision=precision)
    if precision != "fp32":
        raise ValueError(f"precision: {precision} feature extraction is offered for the Inception metrics only; "
                         "DINOv2 metrics run in fp32")
    from domain_guidance.pipelines.metrics.dinov2 import Dinov2Extractor

    return Dinov2Extractor(dinov2_model, device=device, clean_resize=dinov2_clean_resize)


def _reference_stats(reference: Any, key: str, extractor: FeatureExtractor, need_features: bool,
                     cache: str | Path | None, batch_size: int, progress: bool) -> tuple[FeatureStats, str]:
    """Reference statistics from stats (object, .npz path or {key: either}), cache, or images."""
    if isinstance(reference, dict):
        if key not in reference:
            raise KeyError(f"reference dict has no entry for the {key!r} extractor (keys: {sorted(reference)})")
        reference = reference[key]
    expected = extractor_fields(extractor.protocol())  # precision included: fp32 where absent
    if isinstance(reference, FeatureStats):
        diffs = protocol_differences(reference.protocol, expected)
        if diffs:
            raise ValueError("reference statistics were computed under another protocol: " + "; ".join(diffs))
        if need_features and reference.features is None:
            raise ValueError("reference statistics hold no features, which PRDC and KID need")
        return reference, "stats"
    if isinstance(reference, (str, Path)) and is_stats_file(reference):
        return load_stats(reference, expected, need_features), "stats"
    if cache is not None:
        path = Path(cache) / _cache_name(key, extractor, reference, batch_size)
        return cached_stats(path, reference, extractor, batch_size, need_features, progress), "images (cached)"
    return compute_stats(reference, extractor, batch_size, need_features, progress), "images"


def _cache_name(key: str, extractor: FeatureExtractor, reference: Any, batch_size: int) -> str:
    """``{extractor}-{weights hash}-{reference tag}.npz``; the tag hashes the resolved path (or,
    for in-memory images, their bytes), so one cache folder serves several reference sets."""
    if isinstance(reference, (str, Path)):
        tag = hashlib.sha256(str(Path(reference).resolve()).encode()).hexdigest()[:10]
    else:
        tag = image_set_sha256(open_images(reference), batch_size)[:10]
    precision = extractor.protocol().get("precision")  # absent: fp32, the names of earlier caches
    return f"{key}-{extractor.protocol()['weights_sha256'][:12]}-{tag}{'-' + precision if precision else ''}.npz"


def evaluate(
    samples: str | Path | torch.Tensor | np.ndarray | ImageSet,
    reference: Any,
    metrics: Sequence[str] = ("fid",),
    *,
    inception_weights: str | Path | None = None,
    dinov2_model: str | Path = "facebook/dinov2-large",
    dinov2_clean_resize: bool = False,
    batch_size: int = 50,
    device: str = "cpu",
    reference_cache: str | Path | None = None,
    prdc_k: int = 5,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    fd_method: str = "sqrtm",
    output: str | Path | None = None,
    progress: bool = False,
    extractors: dict[str, FeatureExtractor] | None = None,
    precision: str = "fp32",
    allow_shape_mismatch: bool = False,
) -> dict[str, Any]:
    """Score ``samples`` against ``reference``; returns (and optionally writes) a JSON-able dict.

    samples: image folder, ADM ``.npz`` (``arr_0``), (N, H, W, C) array or (N, C, H, W) tensor.
    reference: the same kinds, or statistics (a ``save_stats`` .npz, a ``FeatureStats``, or a
    dict ``{"inception": ..., "dinov2": ...}`` of those). With ``reference_cache`` (a folder),
    reference statistics are reused when protocol and image hash match, computed otherwise.
    metrics: any of ``METRICS`` ("fid", "kid", "prdc" on Inception; "fd_dinov2", "kid_dinov2",
    "prdc_dinov2" on DINOv2). ``extractors`` overrides the networks (keys "inception"/"dinov2").
    fd_method: "sqrtm" (pytorch-fid's scipy sqrtm) or "eigh" (same value, faster on CPUs).
    precision: arithmetic of the Inception network (fp32, the reference protocol, by default; another is
    recorded in the protocol, so statistics of two precisions are never compared or share a cache file).
    Samples of another image shape (channels, height, width) than the reference are refused unless
    ``allow_shape_mismatch`` (then the result records a warning). ``output``: a result file that keeps
    every earlier result of another key (see :mod:`.results`).
    Result keys: metrics, protocol (per extractor), samples, reference, settings, versions, warnings, key.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown or no metrics {unknown}; choose from {sorted(METRICS)}")
    sample_set = open_images(samples)
    if sample_set.num_images < 2:
        raise ValueError(f"need at least 2 sample images, got {sample_set.num_images} in {sample_set.source}")
    by_key: dict[str, list[str]] = {}
    for m in dict.fromkeys(metrics):
        by_key.setdefault(METRICS[m][0], []).append(m)
    result: dict[str, Any] = {"metrics": {}, "protocol": {}, "reference": {}, "timing_s": {}, "warnings": []}
    for key, names in by_key.items():
        t0 = time.perf_counter()
        ext = (extractors or {}).get(key) or _build_extractor(
            key, inception_weights, dinov2_model, dinov2_clean_resize, device, precision)
        need_feats = any(METRICS[n][1] in ("kid", "prdc") for n in names)
        ref, ref_kind = _reference_stats(reference, key, ext, need_feats, reference_cache, batch_size, progress)
        _check_shapes(sample_set, ref, allow_shape_mismatch, result)
        smp = compute_stats(sample_set, ext, batch_size, need_feats, progress)
        suffix = "" if key == "inception" else "_dinov2"
        for n in names:
            kind = METRICS[n][1]
            if kind == "fd":
                result["metrics"][n] = frechet_distance(smp.mu, smp.sigma, ref.mu, ref.sigma, method=fd_method)
            elif kind == "kid":
                k = kid(ref.features, smp.features, kid_subsets, kid_subset_size, seed)
                result["metrics"][f"kid{suffix}_mean"] = k["kid_mean"]
                result["metrics"][f"kid{suffix}_std"] = k["kid_std"]
                result["metrics"][f"kid{suffix}_subset_size"] = k["kid_subset_size"]
            else:
                for name, value in prdc(ref.features, smp.features, prdc_k).items():
                    result["metrics"][f"{name}{suffix}"] = value
        result["protocol"][key] = ext.protocol()
        result["reference"][key] = {"kind": ref_kind, **{f: ref.protocol.get(f) for f in
                                    ("source", "num_images", "image_shape", "image_set_sha256")}}
        result["samples"] = {**sample_set.describe(), "image_set_sha256": smp.protocol["image_set_sha256"]}
        result["timing_s"][key] = round(time.perf_counter() - t0, 3)
    result["settings"] = {"metrics": list(metrics), "batch_size": batch_size, "device": str(device),
                          "prdc_k": prdc_k, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size,
                          "seed": seed, "fd_method": fd_method, "precision": precision}
    result["versions"] = _versions()
    if output is not None:
        return write_result(output, result)
    return result


def _check_shapes(samples: ImageSet, ref: FeatureStats, allow: bool, result: dict[str, Any]) -> None:
    """Refuse (or with ``allow`` record) samples whose (C, H, W) is not the reference's."""
    want = ref.protocol.get("image_shape")
    got = [samples.channels, samples.height, samples.width]
    if want is None or list(want) == got:
        return
    what = (f"samples are {got[0]}x{got[1]}x{got[2]} (channels x height x width) but the reference "
            f"{ref.protocol.get('source', '')} is {want[0]}x{want[1]}x{want[2]}")
    if not allow:
        raise ValueError(f"{what}: the network would resize and colour them alike and the score would compare "
                         "different data; sample at the reference's resolution, or pass --allow-shape-mismatch "
                         "to score anyway (recorded in the result)")
    if what not in result["warnings"]:
        result["warnings"].append(what)


def _versions() -> dict[str, str]:
    import scipy

    import domain_guidance

    return {"domain_guidance": domain_guidance.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version()}


def available_metrics() -> list[str]:
    """Names accepted by ``evaluate(metrics=...)``."""
    return sorted(METRICS)

