"""The shipped flow-matching source of `dog demo --flow` (src/domain_guidance/assets/): what its README says it is."""
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
SOURCE = ASSETS / "animal-source-flow.safetensors"
EPS_SOURCE = ASSETS / "animal-source.safetensors"


@pytest.fixture(scope="module")
def shipped():
    return load_model(SOURCE)


def test_file_matches_the_sha256_recorded_in_the_asset_readme():
    readme = (ASSETS / "README.md").read_text()
    recorded = re.findall(r"sha256 of `animal-source-flow\.safetensors`: `([0-9a-f]{64})`", readme)
    assert len(recorded) == 1, "the asset README must record the file's sha256 once"
    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == recorded[0], "animal-source-flow.safetensors changed: update the asset README and its JSON"
    assert SOURCE.stat().st_size < 20 * 2**20


def test_config_is_the_eps_sources_shape_predicting_velocity(shipped):
    """README: the DiT-M/2 of animal-source.safetensors (same shape, classes 0-5 + null 6), flow matching."""
    c, e = shipped.config, load_model(EPS_SOURCE).config
    assert c.prediction == "velocity" and e.prediction == "eps"
    assert c.to_dict() == {**e.to_dict(), "prediction": "velocity"}  # nothing else differs
    assert (c.hidden_size, c.depth, c.num_heads, c.patch_size, c.in_channels) == (128, 6, 4, 2, 1)
    assert (c.num_classes, c.null_label, c.class_dropout_prob, c.latent) == (6, 6, 0.1, False)
    sd = shipped.net.state_dict()
    assert all(torch.isfinite(v).all() for v in sd.values())
    # trained with the flow loss from the eps weights: every trained tensor moved away from them
    eps_sd = load_model(EPS_SOURCE).net.state_dict()
    assert set(sd) == set(eps_sd)
    moved = [k for k in sd if not torch.equal(sd[k], eps_sd[k])]
    assert "blocks.0.attn.qkv.weight" in moved and "final_layer.linear.weight" in moved
    assert (sd["y_embedder.embedding_table.weight"] - eps_sd["y_embedder.embedding_table.weight"]).abs().max() > 1e-2
    meta = shipped.metadata
    assert meta["produced_by"].startswith("dog finetune --preset animal-source-flow")
    assert meta["init"]["sha256"] == hashlib.sha256(EPS_SOURCE.read_bytes()).hexdigest()


def test_a_few_heun_steps_give_images_and_the_label_matters(shipped):
    den = Denoiser(shipped.net, shipped.config)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6])  # every class and the null label
    with torch.inference_mode():
        x = sample_from_seeds(den, list(range(7)), labels, (1, 16, 16), sampler="ode-heun", steps=6)  # (7, 1, 16, 16)
    assert x.shape == (7, 1, 16, 16) and torch.isfinite(x).all()
    assert x.min() >= -1.3 and x.max() <= 1.3, (x.min(), x.max())  # pixels in [-1, 1] up to sampler error
    assert x.std() > 0.2  # images, not a constant
    assert (x < -0.5).float().mean() > 0.3  # animal-mnist: mostly dark background
    with torch.inference_mode():
        y = sample_from_seeds(den, [0, 0], torch.tensor([0, 5]), (1, 16, 16), sampler="ode-heun", steps=6)
    assert (y[0] - y[1]).abs().max() > 0.1


def test_the_eps_source_cannot_guide_a_flow_model(shipped):
    """DoG with the shipped DiT (eps) source as guide of the flow source is refused, naming both predictions."""
    from domain_guidance.pipelines.generate import GenerationSettings, load_models
    from domain_guidance.pipelines.generate.models import build_denoiser

    models = load_models(str(SOURCE), guide=str(EPS_SOURCE))
    s = GenerationSettings(method="dog", scale=1.5, sampler="ode-heun", steps="4", seeds=[0], labels=[0])
    with pytest.raises(ValueError, match="prediction: fine-tuned 'velocity' vs guide 'eps'"):
        build_denoiser(s, models)
