"""Fixtures of the io tests: a tiny AutoencoderKL saved to disk, small image folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, mode: str = "RGB") -> Path:
    """A random image of ``size`` (w, h) saved at ``path`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_vae(tiny_vae_dir: Path):
    from domain_guidance.io.vae import VAE

    return VAE.from_pretrained(tiny_vae_dir)
