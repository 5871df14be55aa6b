"""Scores of a row: FID / FD_DINOv2 of each method's samples against the full real training folder,
under each evaluation protocol (``protocols``), with cached reference statistics and cached scores."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...io.atomic import write_json
from ..metrics import compute_stats, frechet_distance, load_stats, open_images, save_stats
from ..metrics.dinov2 import POS_ENCODING as DINOV2_POS
from .config import ReproduceConfig
from .protocols import (DESCRIPTIONS, CleanResized, folder_fingerprint, list_images, real_images, sample_images,
                        subsample)

METRIC_EXTRACTOR = {"fid": "inception", "fd_dinov2": "dinov2"}
EXTRACTOR_FIELDS = ("extractor", "weights_sha256", "resize", "preprocess", "feature_dim")


class Extractors:
    """The feature networks, built once and only when a score or a reference has to be computed."""

    def __init__(self, cfg: ReproduceConfig, device: str, given: dict[str, Any] | None):
        self.cfg, self.device, self.built = cfg, device, dict(given or {})

    def base(self, key: str) -> Any:
        if key not in self.built:
            from ..metrics import Dinov2Extractor, InceptionExtractor

            self.built[key] = (InceptionExtractor(self.cfg.inception_weights, device=self.device) if key == "inception"
                               else Dinov2Extractor(self.cfg.dinov2_model, device=self.device))
        return self.built[key]

    def get(self, key: str, protocol: str) -> Any:
        ext = self.base(key)
        return CleanResized(ext, key) if protocol == "dgm-eval-clean" else ext


def reference_stats(cfg: ReproduceConfig, out: Path, reference: Path, files: list[Path], protocol: str, key: str,
                    size: int, ext: Any, fingerprint: str, progress: bool) -> Any:
    """Statistics of the reference images under ``protocol`` (cached in ``out/reference``)."""
    path = out / "reference" / f"{protocol}-{key}-{size}-n{len(files)}.npz"
    expected = {k: v for k, v in ext.protocol().items() if k in EXTRACTOR_FIELDS}
    expected["reference_fingerprint"] = fingerprint
    if path.is_file():
        try:
            return load_stats(path, expected)
        except ValueError:
            pass  # other images or another network: recomputed below (the cache is ours)
    images = real_images(reference, protocol, size, key, files)
    stats = compute_stats(images, ext, cfg.eval_batch_size, keep_features=False, progress=progress)
    stats.protocol["reference_fingerprint"] = fingerprint
    save_stats(path, stats)
    return stats


def _reusable(path: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    same = all(old.get(k) == v for k, v in want.items()) and all(m in old.get("metrics", {}) for m in want["wanted"])
    return old if same else None


def score_samples(cfg: ReproduceConfig, out: Path, reference: Path, sample_dirs: dict[str, Path], *,
                  device: str = "cpu", progress: bool = True,
                  extractors: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One record per (method, protocol) with a drawn sample set; written to ``out/metrics/`` and reused."""
    nets = Extractors(cfg, device, extractors)
    everything = list_images(reference)
    files = subsample(everything, cfg.reference_max_images, cfg.reference_seed)
    fingerprint = folder_fingerprint(files, reference)
    n_reference = len(files)
    weights = {"inception_weights": cfg.inception_weights, "dinov2_model": cfg.dinov2_model,
               "dinov2_pos_encoding": DINOV2_POS, "custom_extractors": sorted(extractors or {})}
    records = []
    for protocol in cfg.eval_protocols:
        for method, folder in sample_dirs.items():
            npz, settings_file = folder / "samples.npz", folder / "settings.json"
            if not npz.is_file() or not settings_file.is_file():
                continue  # a method these models cannot draw (e.g. CFG without label dropout)
            record = json.loads(settings_file.read_text())
            w = float(record["settings"]["scale"])
            path = out / "metrics" / f"{folder.name}.{protocol}.json"
            want = {"samples_key": record["key"], "num_samples": record["num_samples"], "protocol": protocol,
                    "reference_max_images": cfg.reference_max_images, "reference_seed": cfg.reference_seed,
                    "reference_fingerprint": fingerprint, "weights": weights, "wanted": list(cfg.metrics),
                    "fd_method": cfg.fd_method}
            old = _reusable(path, want)
            if old is not None:
                records.append({**old, "reused": True})
                continue
            size = open_images(npz).height
            metrics, protocols = {}, {}
            for name in cfg.metrics:
                key = METRIC_EXTRACTOR[name]
                ext = nets.get(key, protocol)
                ref = reference_stats(cfg, out, reference, files, protocol, key, size, ext, fingerprint, progress)
                smp = compute_stats(sample_images(npz, protocol, key), ext, cfg.eval_batch_size, keep_features=False,
                                    progress=progress)
                metrics[name] = frechet_distance(smp.mu, smp.sigma, ref.mu, ref.sigma, method=cfg.fd_method)
                protocols[key] = ext.protocol()
            result = {**want, "metrics": metrics, "method": method, "w": w, "extractors": protocols,
                      "protocol_description": DESCRIPTIONS[protocol], "reference": str(reference),
                      "num_reference": n_reference, "reference_folder_images": len(everything),
                      "samples": str(npz),
                      "sampling": {k: record["settings"].get(k) for k in ("sampler", "steps", "method", "scale",
                                                                               "channels")}}
            write_json(path, result)
            records.append(result)
    return records


