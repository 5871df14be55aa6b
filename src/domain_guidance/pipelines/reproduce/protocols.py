"""The two evaluation protocols a row is scored under; each number says which one it used.

``dgm-eval-clean`` (the follow-up's re-run: dgm-eval ``--clean_resize``): every image, a real one at
its own size and a generated one at 256, is converted to RGB and resized straight to the
extractor's input (Inception 299 x 299, DINOv2 224 x 224, aspect ratio not kept) with PIL bicubic
on each channel in float, clipped to [0, 255], without rounding to uint8 (clean-fid's resize).

``pytorch-fid``: the real images are centre-cropped to the samples' size as the training data was
(ADM/DiT ``center_crop_arr``), then each extractor resizes as it does by itself: Inception torch
bilinear to 299 (pytorch-fid), DINOv2 PIL bicubic on uint8 to 224 (dgm-eval's default).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from ...io.data import center_crop_arr
from ..metrics import ImageSet, open_images

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
INPUT_SIZE = {"inception": 299, "dinov2": 224}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WORKERS = min(8, os.cpu_count() or 1)  # threads that decode and resize (PIL releases the GIL while it works)
DESCRIPTIONS = {
    "dgm-eval-clean": "every image RGB, resized straight to the extractor input (Inception 299, DINOv2 224) with "
                      "PIL bicubic per float channel, clipped, no uint8 rounding (dgm-eval --clean_resize); real "
                      "images at their own size, not cropped",
    "pytorch-fid": "real images centre-cropped to the sample size (ADM center_crop_arr); then Inception torch "
                   "bilinear to 299 (pytorch-fid), DINOv2 PIL bicubic uint8 to 224",
}


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries skipped), sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"reference folder {root} does not exist; expected the prepared training split")
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise FileNotFoundError(f"reference folder {root}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def folder_fingerprint(files: list[Path], root: Path) -> str:
    """sha256 of the relative paths, sizes and mtimes (what decides the reference statistics cheaply)."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def clean_resize(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) float32 in [0, 255]: PIL bicubic per float channel, clipped."""
    chans = [np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize((size, size), Image.Resampling.BICUBIC))
             for c in range(3)]
    return np.stack(chans, axis=2).clip(0, 255).astype(np.float32)


def _to_float_batch(arrs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrs) / np.float32(255)).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S)


def _stack(arrs: list[np.ndarray], clean: bool) -> torch.Tensor:
    """(H, W, 3) arrays -> (B, 3, H, W): float in [0, 1] after a clean resize, else uint8."""
    if clean:
        return _to_float_batch(arrs)
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def subsample(files: list[Path], max_images: int | None, seed: int) -> list[Path]:
    """At most ``max_images`` of ``files``: dgm-eval's ``--nsample`` rule (legacy numpy RNG seeded with ``seed``,
    a choice without replacement, kept in file order); all of them when None or when there are fewer."""
    if max_images is None or len(files) <= max_images:
        return files
    keep = sorted(np.random.RandomState(seed).choice(len(files), max_images, replace=False))
    return [files[i] for i in keep]


def real_images(folder: str | Path, protocol: str, size: int, key: str, files: list[Path] | None = None) -> ImageSet:
    """The reference folder (or ``files`` of it) as an ImageSet under ``protocol`` for extractor ``key``
    (``size``: the samples' size, to which the pytorch-fid protocol crops)."""
    root = Path(folder)
    files = list_images(root) if files is None else files
    clean = protocol == "dgm-eval-clean"
    side = INPUT_SIZE[key] if clean else size

    def load(p: Path) -> np.ndarray:
        try:
            with Image.open(p) as im:
                rgb = im.convert("RGB")
        except (OSError, ValueError) as e:
            raise ValueError(f"reference image {p} cannot be decoded ({e}); run `dog data prepare` again") from e
        return clean_resize(np.asarray(rgb), side) if clean else np.asarray(center_crop_arr(rgb, size))

    def reader(bs: int) -> Iterator[torch.Tensor]:
        with ThreadPoolExecutor(WORKERS) as pool:
            for s in range(0, len(files), bs):
                arrs = list(pool.map(load, files[s:s + bs]))
                yield _stack(arrs, clean)

    notes = [DESCRIPTIONS[protocol]]
    return ImageSet(str(root), len(files), 3, side, side, reader, notes)


def sample_images(samples: str | Path, protocol: str, key: str) -> ImageSet:
    """Generated samples (``samples.npz``) as an ImageSet under ``protocol`` for extractor ``key``."""
    base = open_images(samples)
    if protocol != "dgm-eval-clean":
        return base
    side = INPUT_SIZE[key]

    def reader(bs: int) -> Iterator[torch.Tensor]:
        with ThreadPoolExecutor(WORKERS) as pool:
            for batch in base.batches(bs):  # (B, C, H, W) uint8
                x = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
                arrs = list(pool.map(lambda a: clean_resize(a, side), list(x.permute(0, 2, 3, 1).numpy())))
                yield _to_float_batch(arrs)

    return ImageSet(base.source, base.num_images, 3, side, side, reader, [DESCRIPTIONS[protocol]])


class CleanResized:
    """An extractor fed images already clean-resized to its input size (float (N, 3, S, S) in [0, 1])."""

    def __init__(self, inner: Any, key: str):
        self.inner, self.key = inner, key
        self.name, self.feature_dim = inner.name, inner.feature_dim

    def protocol(self) -> dict[str, Any]:
        side = INPUT_SIZE[self.key]
        resize = f"clean: PIL bicubic per float channel, clipped, to {side}x{side} (dgm-eval --clean_resize)"
        return {**self.inner.protocol(), "resize": resize, "preprocess": resize + (
            "; 2x-1" if self.key == "inception" else "; ImageNet mean/std")}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        side = INPUT_SIZE[self.key]
        if images.dtype == torch.uint8 or tuple(images.shape[1:]) != (3, side, side):
            raise ValueError(f"clean-resize protocol: expected float images (N, 3, {side}, {side}) in [0, 1], got "
                             f"{images.dtype} {tuple(images.shape)}")
        if self.key == "inception":
            return self.inner(images)  # at 299 x 299 its own resize is the identity: only 2x - 1
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = ((images.float() - mean) / std).to(self.inner.device)  # (N, 3, 224, 224)
        return self.inner.model(pixel_values=x).pooler_output.float().cpu()  # (N, D)
