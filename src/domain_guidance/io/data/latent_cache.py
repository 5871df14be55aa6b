"""Encode a dataset once with the VAE; serve posterior samples of the cached latents.

The cache is one safetensors file holding, per image, the UNSCALED posterior mean and std of the
image and of its horizontal mirror (``mean``, ``std``, ``mean_flip``, ``std_flip``: (N, c, h, w))
plus ``labels`` (N,). Its JSON metadata (in the safetensors header, copied to ``<file>.json`` for
people) names the VAE and its weight hash, the scale, the dataset fingerprint and shape.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ..atomic import atomic_path, write_json
from ..vae import VAE
from .common import ImageDataset, SampleKey, hflip, parse_key

FORMAT = "domain_guidance.latent_cache/1"
META_KEY = "domain_guidance"
_CHECKED = ("format", "dataset_fingerprint", "vae_fingerprint", "count", "resolution", "channels", "dtype")


class StaleCacheError(RuntimeError):
    """The cache on disk was built from another dataset, VAE or format."""


def read_cache_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata stored in a cache file's header."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if META_KEY not in meta:
        raise ValueError(f"{path} is a safetensors file without latent-cache metadata (key {META_KEY!r})")
    return json.loads(meta[META_KEY])


def expected_metadata(dataset: ImageDataset, vae: VAE, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The metadata a fresh cache of ``dataset`` encoded by ``vae`` would carry (staleness reference)."""
    return {"format": FORMAT, "dataset_fingerprint": dataset.fingerprint, "vae_fingerprint": vae.fingerprint,
            "vae": vae.source, "scale": vae.scale, "count": len(dataset), "resolution": dataset.resolution,
            "channels": dataset.channels, "dtype": str(dtype).removeprefix("torch."),
            "class_names": list(dataset.class_names), "unlabelled": dataset.unlabelled,
            "dataset": dataset.describe()}


def stale_reasons(meta: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Human-readable differences between stored and expected metadata (empty when fresh)."""
    return [f"{k}: cache has {meta.get(k)!r}, expected {expected[k]!r}" for k in _CHECKED
            if k in expected and meta.get(k) != expected[k]]


@torch.no_grad()
def build_latent_cache(dataset: ImageDataset, vae: VAE, path: str | os.PathLike, *, batch_size: int = 32,
                       dtype: torch.dtype = torch.float32, on_stale: str = "rebuild",
                       progress: Callable[[int, int], None] | None = None) -> Path:
    """Encode ``dataset`` (unflipped and mirrored) into ``path`` unless a fresh cache is already there.

    ``on_stale``: "rebuild" (overwrite a cache built from another dataset/VAE) or "error" (raise
    ``StaleCacheError``). ``dtype`` is the storage dtype (float16 halves the file). ``progress(done,
    total)`` is called after every batch. Returns ``path``.
    """
    path = Path(path)
    if on_stale not in ("rebuild", "error"):
        raise ValueError(f"on_stale must be 'rebuild' or 'error'; got {on_stale!r}")
    if dataset.channels != vae.in_channels:
        raise ValueError(f"dataset has {dataset.channels} channel(s) but VAE {vae.source} expects {vae.in_channels}: "
                         f"load the dataset with channels={vae.in_channels}")
    expected = expected_metadata(dataset, vae, dtype)
    if path.exists():
        reasons = stale_reasons(read_cache_metadata(path), expected)
        if not reasons:
            return path
        if on_stale == "error":
            raise StaleCacheError(f"latent cache {path} is stale ({'; '.join(reasons)}); delete it or rebuild "
                                  "with on_stale='rebuild'")
    n = len(dataset)
    out: dict[str, torch.Tensor] = {}
    for start in range(0, n, batch_size):
        x = torch.stack([dataset.load(i) for i in range(start, min(n, start + batch_size))])  # (B, C, H, W)
        mean, std = vae.encode(torch.cat([x, hflip(x)]), batch_size)  # (2B, c, h, w) each
        b = len(x)
        for name, t in (("mean", mean[:b]), ("std", std[:b]), ("mean_flip", mean[b:]), ("std_flip", std[b:])):
            if name not in out:
                out[name] = torch.empty((n, *t.shape[1:]), dtype=dtype)
            out[name][start:start + b] = t.to(dtype)
        if progress is not None:
            progress(start + b, n)
    out["labels"] = torch.as_tensor(dataset.labels, dtype=torch.int64)
    meta = {**expected, "latent_shape": list(out["mean"].shape[1:]), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_path(path) as tmp:  # temp file, fsync, os.replace: a failed write keeps the old cache
        save_file(out, str(tmp), metadata={META_KEY: json.dumps(meta)})
    write_json(path.with_name(path.name + ".json"), meta)  # for people; the header is authoritative
    return path


class LatentDataset(Dataset):
    """``ds[key] -> (latent (c, h, w) float32, label int)`` from a cache built by ``build_latent_cache``.

    Key ``i``: ``mean * scale`` of the unflipped image (no noise). Key ``(i, seed)`` or
    ``(i, seed, flip)`` (see ``common.parse_key``): the generator seeded with ``seed`` draws the flip
    coin, then the noise: ``(mean + std * noise) * scale`` of the chosen orientation. The result
    depends only on the key, never on workers or batch size. ``expected`` (e.g.
    ``expected_metadata(dataset, vae)``) makes a stale cache raise ``StaleCacheError``.
    ``scale`` defaults to the scale recorded in the cache.
    """

    def __init__(self, path: str | os.PathLike, *, scale: float | None = None, random_flip: bool = True,
                 expected: dict[str, Any] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"latent cache {self.path} does not exist; build it with build_latent_cache")
        self.meta = read_cache_metadata(self.path)
        reasons = stale_reasons(self.meta, expected) if expected else []
        if self.meta.get("format") != FORMAT:
            reasons.insert(0, f"format: cache has {self.meta.get('format')!r}, expected {FORMAT!r}")
        if reasons:
            raise StaleCacheError(f"latent cache {self.path} is stale ({'; '.join(reasons)}); rebuild it with "
                                  "build_latent_cache(..., on_stale='rebuild')")
        t = load_file(str(self.path))
        self.mean, self.std = t["mean"], t["std"]  # (N, c, h, w)
        self.mean_flip, self.std_flip = t["mean_flip"], t["std_flip"]
        self.labels = t["labels"].numpy()
        self.scale = float(self.meta["scale"] if scale is None else scale)
        self.random_flip = random_flip
        self.class_names: list[str] = list(self.meta["class_names"])
        self.unlabelled: bool = bool(self.meta["unlabelled"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int]:
        index, gen, flip = parse_key(key, self.random_flip)
        if not -len(self) <= index < len(self):
            raise IndexError(f"latent cache {self.path}: index {index} out of range for {len(self)} samples")
        mean = (self.mean_flip if flip else self.mean)[index].float()  # (c, h, w)
        if gen is None:
            return mean * self.scale, int(self.labels[index])
        std = (self.std_flip if flip else self.std)[index].float()
        noise = torch.randn(mean.shape, generator=gen)
        return (mean + std * noise) * self.scale, int(self.labels[index])


def cached_latents(dataset: ImageDataset, vae: VAE, path: str | os.PathLike, *, batch_size: int = 32,
                   dtype: torch.dtype = torch.float32, on_stale: str = "rebuild",
                   random_flip: bool | None = None) -> LatentDataset:
    """Build (or reuse a fresh) cache of ``dataset`` and open it, checked against ``dataset`` and ``vae``."""
    build_latent_cache(dataset, vae, path, batch_size=batch_size, dtype=dtype, on_stale=on_stale)
    return LatentDataset(path, random_flip=dataset.random_flip if random_flip is None else random_flip,
                         expected=expected_metadata(dataset, vae, dtype))
