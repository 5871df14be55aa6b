"""The shipped round-4 source `glyph-source.safetensors` (src/domain_guidance/assets/): what its README says it is."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch

import domain_guidance
from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.checkpoints import load_model
from domain_guidance.io.data.glyphs import glyph_hue

ASSETS = Path(domain_guidance.__file__).resolve().parent / "assets"
SOURCE = ASSETS / "glyph-source.safetensors"


def test_file_matches_the_sha256_recorded_in_the_asset_readme():
    recorded = re.findall(r"sha256 of `glyph-source\.safetensors`: `([0-9a-f]{64})`", (ASSETS / "README.md").read_text())
    assert len(recorded) == 1, "the asset README must record the file's sha256 once"
    assert hashlib.sha256(SOURCE.read_bytes()).hexdigest() == recorded[0], "glyph-source.safetensors changed"


def test_config_and_samples_are_those_of_a_trained_rgb_glyph_source():
    """README: DiT-M/2 on 16x16x3 pixels, shapes 0-7 + null label 8; its samples are coloured shapes on grey."""
    m = load_model(SOURCE)
    c = m.config
    assert (c.hidden_size, c.depth, c.patch_size, c.in_channels, c.input_size) == (128, 6, 2, 3, 16)
    assert (c.num_classes, c.null_label, c.prediction, c.latent) == (8, 8, "eps", False)
    with torch.inference_mode():
        x = sample_from_seeds(Denoiser(m.net, c), list(range(8)), torch.arange(8), (3, 16, 16), sampler="ddim",
                              steps=10)  # (8, 3, 16, 16)
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (8, 16, 16, 3)
    # a fresh network gives coloured noise; a trained one a grey background (low chroma at the border) around a
    # coloured shape whose hue the measure finds (10 DDIM steps: allow one faint shape)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1).astype(int)
    chroma = border.max(-1) - border.min(-1)  # (8, 64)
    assert (np.median(chroma, axis=1) < 12).all(), np.median(chroma, axis=1)
    assert (~np.isnan(glyph_hue(images))).sum() >= 7
