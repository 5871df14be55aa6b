"""Latent models with a tiny AutoencoderKL: the cache and per-step encoding give the same latents; both train."""
from __future__ import annotations

import json

import pytest
import torch

from domain_guidance.io.checkpoints import load_model
from domain_guidance.io.distributed import DistInfo
from domain_guidance.pipelines.training import train
from domain_guidance.pipelines.training.data import prepare_data
from domain_guidance.pipelines.training.distributed import StepKeys

from .conftest import tiny_config


@pytest.fixture(scope="module")
def vae_dir(tiny_vae_dir):
    return tiny_vae_dir


def latent_sets(vae_dir, *more):
    return ("init=scratch", "data.dataset=digits", "data.resolution=8", "data.classes=[0, 1]",
            "data.images_per_class=12", "data.random_flip=true", f"vae={vae_dir}", *more)


def test_cache_and_per_step_encoding_agree(tmp_path, vae_dir):
    cached = tiny_config(tmp_path / "a", *latent_sets(vae_dir), preset=None)
    direct = tiny_config(tmp_path / "b", *latent_sets(vae_dir, "data.latent_cache=false"), preset=None)
    dc = prepare_data(cached, None, DistInfo(), tmp_path / "a")
    dd = prepare_data(direct, None, DistInfo(), tmp_path / "b")
    assert dc.shape == dd.shape == (4, 4, 4) and (tmp_path / "a" / "latents.safetensors").is_file()
    assert not dc.encode_every_step and dd.encode_every_step
    keys = StepKeys(len(dc.dataset), 8, seed=0).data_keys(0, range(8))
    from_cache = torch.stack([dc.dataset[k][0] for k in keys])  # (8, 4, 4, 4)
    images = torch.stack([dd.dataset[k][0] for k in keys])  # (8, 3, 8, 8), flipped per key
    encoded = dd.to_model_space(images, keys)
    torch.testing.assert_close(encoded, from_cache, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cache", ["true", "false"])
def test_latent_model_trains_and_decodes_grids(tmp_path, vae_dir, cache):
    cfg = tiny_config(tmp_path / "run", *latent_sets(vae_dir, f"data.latent_cache={cache}", "steps=2",
                                                    "sample_every=2", "grid.num=2", "grid.steps=2"), preset=None)
    result = train(cfg)
    config = load_model(result.checkpoint).config
    assert config.latent and config.in_channels == 4 and config.input_size == 4 and config.vae == str(vae_dir)
    assert json.loads((result.run_dir / "grids" / "step_0000002.json").read_text())["rows"] == ["unguided", "cfg"]
