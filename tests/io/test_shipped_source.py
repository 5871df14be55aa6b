"""The shipped source model of `dog demo` (src/domain_guidance/assets/): what its README says it is."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

import domain_guidance
from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.checkpoints import load_model

ASSETS = Path(domain_guidance.__file__).resolve().parent / "assets"
SOURCE = ASSETS / "animal-source.safetensors"


@pytest.fixture(scope="module")
def shipped():
    return load_model(SOURCE)


def test_file_matches_the_sha256_recorded_in_the_asset_readme():
    readme = (ASSETS / "README.md").read_text()
    recorded = re.findall(r"sha256 of `animal-source\.safetensors`: `([0-9a-f]{64})`", readme)
    assert len(recorded) == 1, "the asset README must record the file's sha256 once"
    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == recorded[0], "animal-source.safetensors changed: update the asset README and its JSON"


def test_config_is_the_documented_dit_m2(shipped):
    """README: DiT-M/2 (hidden 128, depth 6, 4 heads, patch 2) on 16x16x1 pixels, classes 0-5 + null label 6."""
    c = shipped.config
    assert (c.hidden_size, c.depth, c.num_heads, c.patch_size) == (128, 6, 4, 2)
    assert (c.grid_hw_pixels, c.in_channels, c.latent, c.vae) == ((16, 16), 1, False, None)
    assert (c.num_classes, c.null_label, c.class_dropout_prob) == (6, 6, 0.1)
    assert c.learn_sigma and c.prediction == "eps"
    sd = shipped.net.state_dict()
    assert tuple(sd["y_embedder.embedding_table.weight"].shape) == (7, 128)  # 6 classes + null
    assert tuple(sd["final_layer.linear.weight"].shape) == (2 * 2 * 2, 128)  # patch^2 x (eps + variance)
    assert sum(p.numel() for p in shipped.net.parameters()) > 1_000_000  # a trained M/2, not a stub
    assert all(torch.isfinite(v).all() for v in sd.values())
    # trained, not freshly initialised: adaLN-Zero and the output layer start at exactly zero
    assert sd["final_layer.linear.weight"].abs().max() > 1e-3 and sd["blocks.0.adaLN_modulation.1.weight"].abs().max() > 1e-3


def test_a_few_ddim_steps_give_finite_images_in_range(shipped):
    den = Denoiser(shipped.net, shipped.config)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6])  # every class and the null label
    with torch.inference_mode():
        x = sample_from_seeds(den, list(range(7)), labels, (1, 16, 16), sampler="ddim", steps=8)  # (7, 1, 16, 16)
    assert x.shape == (7, 1, 16, 16) and torch.isfinite(x).all()
    assert x.min() >= -1.2 and x.max() <= 1.2, (x.min(), x.max())  # pixels in [-1, 1] up to sampler error
    assert x.std() > 0.2  # images, not a constant
    assert (x < -0.5).float().mean() > 0.3  # animal-mnist: mostly dark background
    # the label matters: same seed, different class, different image
    with torch.inference_mode():
        y = sample_from_seeds(den, [0, 0], torch.tensor([0, 5]), (1, 16, 16), sampler="ddim", steps=8)
    assert (y[0] - y[1]).abs().max() > 0.1
