"""Helpers for the metrics tests (a uniquely named module, imported as tests.metrics.helpers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class TinyExtractor:
    """Cheap deterministic 12-d features (3x4 average pool of the gray image), counts its calls."""

    name = "tiny-test"
    feature_dim = 12

    def __init__(self, weights_tag: str = "w0") -> None:
        self.weights_tag = weights_tag
        self.calls = 0

    def protocol(self) -> dict:
        return {"extractor": self.name, "weights_sha256": self.weights_tag,
                "preprocess": "gray mean; 3x4 adaptive avg pool", "feature_dim": self.feature_dim}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = images.float().mean(dim=1, keepdim=True) / 255.0  # (N, 1, H, W)
        return F.adaptive_avg_pool2d(x, (3, 4)).flatten(1)  # (N, 12)


def random_images(n: int, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, c, h, w) uint8 random images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def write_folder(root: Path, images: torch.Tensor, ext: str = ".png", nested: bool = False) -> Path:
    """Write (N, C, H, W) uint8 images as files 000.png, ... (half in a subfolder if nested)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        arr = img.numpy()
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
        sub = root / "sub" if nested and i % 2 else root
        sub.mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(sub / f"{i:03d}{ext}")
    return root
