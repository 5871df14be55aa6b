"""Training data: images (pixel models) or VAE latents (cached, or encoded every step), keyed by seeds.

Every item is addressed by a key ``(index, data seed)`` (see ``io.data.common``): the seed draws
the flip coin, then the VAE posterior noise. The latent cache and encoding every step therefore
give the same latents up to the VAE's numerical batch effects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ...core.models.config import DiTConfig
from ...io.data import DatasetView, ImageDataset, load_dataset
from ...io.data.common import fingerprint_of
from .config import TrainConfig
from .distributed import DistInfo, StepBatchSampler, StepKeys, barrier


@dataclass
class TrainData:
    """The training set as the loop sees it (items in model space unless ``encode_every_step``)."""

    dataset: Dataset
    images: ImageDataset
    num_classes: int
    class_names: list[str]
    unlabelled: bool
    bad_files: list[tuple[str, str]]
    shape: tuple[int, int, int]  # model-space (C, H, W) of one item
    vae: Any = None  # io.vae.VAE of a latent model (decodes the sample grids)
    encode_every_step: bool = False  # latent model without a cache: items are images, encoded per step
    info: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # see data_fingerprint; saved with checkpoints

    def loader(self, keys: StepKeys, ks: range, start: int, stop: int, num_workers: int = 0) -> DataLoader:
        """Batches of this rank's slice ``ks`` for steps ``start .. stop - 1``: (x (b, ...), y (b,))."""
        return DataLoader(self.dataset, batch_sampler=StepBatchSampler(keys, ks, start, stop),
                          num_workers=num_workers, persistent_workers=False)

    @torch.no_grad()
    def to_model_space(self, x: torch.Tensor, keys: list[tuple[int, int]]) -> torch.Tensor:
        """Images -> scaled latents with per-key posterior noise when encoding every step; else ``x``."""
        if not self.encode_every_step:
            return x
        mean, std = self.vae.encode(x)  # (b, c, h, w) each, unscaled
        noise = []
        for _, seed in keys:  # the cache's convention: the key's generator draws the flip coin, then the noise
            gen = torch.Generator().manual_seed(int(seed))
            torch.rand((), generator=gen)
            noise.append(torch.randn(tuple(mean.shape[1:]), generator=gen))
        return (mean + std * torch.stack(noise).to(mean.device)) * self.vae.scale


def _selection_sha256(ds: ImageDataset) -> str:
    """Hash of which images a dataset holds: an image folder's file list (relative paths, labels, classes;
    not file times, so a copied folder still matches), a built-in selection's pixels and labels."""
    if isinstance(ds, DatasetView):
        return fingerprint_of("view", _selection_sha256(ds.base), ds.indices, ds.labels, list(ds.class_names))
    paths, root = getattr(ds, "paths", None), getattr(ds, "root", None)
    if paths is not None and root is not None:
        return fingerprint_of("files", [Path(p).relative_to(root).as_posix() for p in paths], ds.labels,
                              list(ds.class_names))
    return ds.fingerprint


def _content_sha256(ds: ImageDataset) -> str:
    """Hash of the selected images' contents (file bytes of an image folder, pixels of a built-in) and labels."""
    if isinstance(ds, DatasetView):
        return fingerprint_of("view", _content_sha256(ds.base), ds.indices, ds.labels, list(ds.class_names))
    content = getattr(ds, "content_fingerprint", None)
    return content if content is not None else ds.fingerprint


def data_fingerprint(images: ImageDataset) -> dict[str, Any]:
    """What a resumed run must find unchanged: number of images, class names, the selection (file names) and
    the content (file bytes: an image edited in place under the same name changes it)."""
    return {"images": len(images), "num_classes": images.num_classes, "classes": list(images.class_names),
            "selection_sha256": _selection_sha256(images), "content_sha256": _content_sha256(images)}


def bad_files_of(ds: Any) -> list[tuple[str, str]]:
    """Unreadable files the data layer skipped (image folders; views look through to their base)."""
    while ds is not None:
        if hasattr(ds, "bad_files"):
            return [(str(p), r) for p, r in ds.bad_files]
        ds = getattr(ds, "base", None)
    return []


def open_vae(source: str, device: torch.device):
    """An ``io.vae.VAE`` on ``device`` (local folder or hub id; the hub is not reachable offline)."""
    from ...io.vae import VAE

    return VAE.from_pretrained(source, device=device)


def load_images(cfg: TrainConfig, resolution: int | None, channels: int | None) -> ImageDataset:
    """The image dataset of ``cfg.data`` (built-in name or folder) at ``resolution`` / ``channels``."""
    d = cfg.data
    folder_kwargs = {} if d.dataset in ("digits", "animal-mnist") else {
        "layout": d.layout, "max_bad_fraction": d.max_bad_fraction}
    return load_dataset(d.dataset, resolution=resolution, channels=channels, classes=d.classes,
                        images_per_class=d.images_per_class, split=d.split, test_fraction=d.test_fraction,
                        split_seed=d.split_seed, seed=d.subset_seed, random_flip=d.random_flip, **folder_kwargs)


def prepare_data(cfg: TrainConfig, base: DiTConfig | None, dist: DistInfo, run_dir: Path,
                 check: Callable[[dict[str, Any]], None] | None = None) -> TrainData:
    """Load the training set in the input space of ``base`` (fine-tune) or of ``cfg`` (scratch).

    Latent models need a VAE (``cfg.vae`` or the base's ``vae``); with ``data.latent_cache`` rank 0
    encodes the set once into ``data.cache_path`` (default ``<run>/latents.safetensors``) while
    the other ranks wait. ``check(fingerprint)`` (a resume's data check) runs before any encoding.
    """
    latent = base.latent if base is not None else cfg.vae is not None
    vae = None
    if latent:
        source = cfg.vae or (base.vae if base is not None else None)
        if not source:
            raise ValueError("a latent model needs a VAE: --set vae=DIR (a diffusers AutoencoderKL folder)")
        vae = open_vae(source, dist.device)
    res, ch = cfg.data.resolution, cfg.data.channels
    if base is not None:
        h, w = base.grid_hw_pixels
        if h != w:
            raise ValueError(f"the base model's input {base.grid_hw_pixels} is not square; "
                             "only square images are supported")
        native = h * (vae.downsample if vae is not None else 1)
        if res is not None and res != native:
            raise ValueError(f"data.resolution={res} but the base model takes {native}x{native} images "
                             f"({'latents ' + str(h) + 'x' + str(h) if vae else 'pixels'}); drop the override")
        res = native
        ch = ch or (vae.in_channels if vae is not None else base.in_channels)
    elif vae is not None:
        ch = ch or vae.in_channels
    images = load_images(cfg, res, ch)
    fingerprint = data_fingerprint(images)
    if vae is not None:  # a latent model's training items are the VAE's latents of the images
        fingerprint["vae_sha256"] = vae.fingerprint
    if check is not None:
        check(fingerprint)
    if vae is not None and images.resolution % vae.downsample:
        raise ValueError(f"image resolution {images.resolution} is not divisible by the VAE's {vae.downsample}")
    bad = bad_files_of(images)
    dataset: Dataset = images
    if vae is not None:
        lat = images.resolution // vae.downsample
        shape = (vae.latent_channels, lat, lat)
        if cfg.data.latent_cache:
            from ...io.data import LatentDataset, build_latent_cache, expected_metadata

            path = Path(cfg.data.cache_path) if cfg.data.cache_path else run_dir / "latents.safetensors"
            if dist.is_main:
                build_latent_cache(images, vae, path)
            barrier(dist)
            dataset = LatentDataset(path, random_flip=images.random_flip, expected=expected_metadata(images, vae))
    else:
        shape = (images.channels, images.resolution, images.resolution)
    if base is not None and shape != (base.in_channels, *base.grid_hw_pixels):
        raise ValueError(f"training items have shape {shape} but the base model takes "
                         f"{(base.in_channels, *base.grid_hw_pixels)}")
    info = {"dataset": images.describe(), "bad_files": len(bad), "latent": vae is not None,
            "latent_cache": vae is not None and cfg.data.latent_cache, "vae": vae.source if vae is not None else None,
            "vae_scale": vae.scale if vae is not None else None}
    return TrainData(dataset, images, images.num_classes, list(images.class_names),
                     bool(images.unlabelled), bad, shape, vae, vae is not None and not cfg.data.latent_cache, info,
                     fingerprint)
