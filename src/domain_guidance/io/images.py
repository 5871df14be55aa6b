"""Writing sample images: PNG grids, PNG folders and ADM-style ``.npz`` (uint8, NHWC)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_path


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1], (N, C, H, W) float -> (N, C, H, W) uint8 (DiT's rounding); NaN or inf is refused (a cast
    would turn it into a black pixel)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"images hold {int((~torch.isfinite(x)).sum())} non-finite values (NaN or inf); expected "
                         "finite pixel values in [-1, 1]")
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_nhwc(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 tensor -> (N, H, W, C) numpy."""
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _pil(image_hwc: np.ndarray) -> Image.Image:
    return Image.fromarray(image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc)


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) uint8 -> one (H', W', C) uint8 mosaic with ``nrow`` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    arr = to_nhwc(images)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = arr[i]
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, upscale: int = 1) -> Path:
    """Save a PNG mosaic of uint8 (N, C, H, W) images; ``upscale`` enlarges small images (nearest)."""
    img = _pil(make_grid(images, nrow))
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one uint8 (C, H, W) image as PNG, atomically."""
    with atomic_path(path) as tmp:
        _pil(to_nhwc(image[None])[0]).save(tmp, format="PNG")
    return Path(path)


def save_npz(path: str | os.PathLike, images: torch.Tensor, **extra: np.ndarray) -> Path:
    """ADM-style archive: ``arr_0`` = uint8 (N, H, W, C), plus any extra arrays (labels, seeds)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, arr_0=to_nhwc(images), **extra)
    return Path(path)
