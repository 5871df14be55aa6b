"""SiT presets (the published recipe on SiT-XL/2, its LoRA variant, a CPU flow-matching preset), a raw SiT
base declared with ``base_prediction``, and grids whose ``auto`` sampler follows the model's prediction."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from domain_guidance.core.models import DiT, dit_config
from domain_guidance.io.checkpoints import load_model
from domain_guidance.pipelines.training import PRESETS, resolve_config, train

from .conftest import tiny_config

FINETUNE_SETS = ["base=SiT-XL-2-256x256.pt", "data.dataset=/data/target"]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _differences(a: str, b: str) -> dict[str, tuple]:
    """Flattened config keys where presets ``a`` and ``b`` differ (given the same base and data)."""
    x, y = (_flat(resolve_config(name, sets=FINETUNE_SETS).to_dict()) for name in (a, b))
    return {k: (x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)}


def test_sit_published_preset_is_the_dit_recipe_on_a_velocity_base():
    pub = resolve_config("sit-xl2-imagenet-published", sets=FINETUNE_SETS)
    assert (pub.init, pub.mode, pub.base_which, pub.base_prediction) == ("base", "full", "ema", "velocity")
    assert (pub.lr, pub.weight_decay, pub.batch_size, pub.steps, pub.label_dropout) == (1e-4, 0.0, 32, 24000, 0.1)
    assert (pub.ema.decay, pub.ema.warmup, pub.grad_clip, pub.precision, pub.tf32) == (
        0.9999, "none", None, "fp32", True)
    assert (pub.data.resolution, pub.data.channels, pub.data.random_flip, pub.data.latent_cache) == (256, 3, True, True)
    assert pub.vae == "stabilityai/sd-vae-ft-ema" and pub.adam_betas == [0.9, 0.999]
    assert (pub.sample_every, pub.ckpt_every, pub.keep_last, pub.log_every) == (2000, 1000, 3, 100)
    assert (pub.grid.num, pub.grid.sampler, pub.grid.steps, pub.grid.scale) == (8, "sde-euler", 50, 1.5)
    assert _differences("dit-xl2-imagenet-published", "sit-xl2-imagenet-published") == {
        "base_prediction": ("auto", "velocity"), "grid.sampler": ("ddpm", "sde-euler"),
        "out": ("runs/dit-xl2-finetune", "runs/sit-xl2-finetune"),
        "preset": ("dit-xl2-imagenet-published", "sit-xl2-imagenet-published")}


def test_sit_lora_preset_is_the_dit_lora_recipe_on_a_velocity_base():
    lora = resolve_config("sit-xl2-imagenet-lora", sets=FINETUNE_SETS)
    assert (lora.mode, lora.lora.rank, lora.lora.alpha, lora.base_prediction) == ("lora", 32, None, "velocity")
    assert (lora.lr, lora.batch_size, lora.steps, lora.ema.decay, lora.ema.warmup) == (
        1e-4, 32, 24000, 0.9999, "linear")
    assert (lora.precision, lora.grid.sampler, lora.grid.steps) == ("auto", "sde-euler", 50)
    assert _differences("dit-xl2-imagenet-lora", "sit-xl2-imagenet-lora") == {
        "base_prediction": ("auto", "velocity"), "grid.sampler": ("ddpm", "sde-euler"),
        "out": ("runs/dit-xl2-lora", "runs/sit-xl2-lora"), "preset": ("dit-xl2-imagenet-lora", "sit-xl2-imagenet-lora")}


def test_cpu_tiny_flow_preset_fields():
    cfg = resolve_config("cpu-tiny-flow")
    assert (cfg.init, cfg.model, cfg.learn_sigma, cfg.device, cfg.data.dataset, cfg.data.resolution) == (
        "scratch", "SiT-T/2", False, "cpu", "digits", 8)
    assert cfg.model_overrides == {"hidden_size": 64, "depth": 2, "num_heads": 4}
    assert dit_config(cfg.model, **cfg.model_overrides).prediction == "velocity"
    assert cfg.grid.sampler == "auto" and cfg.label_dropout == 0.1 and cfg.base_prediction == "auto"
    assert PRESETS["cpu-tiny-flow"]["steps"] == cfg.steps


def test_cpu_tiny_flow_trains_a_velocity_model_with_ode_heun_grids(tmp_path):
    cfg = tiny_config(tmp_path / "run", "steps=2", "sample_every=2", "grid.num=2", "grid.steps=2",
                      preset="cpu-tiny-flow")
    result = train(cfg)
    assert load_model(result.checkpoint).config.prediction == "velocity"
    grid = json.loads((result.run_dir / "grids" / "step_0000002.json").read_text())
    assert grid["sampler"] == "ode-heun" and grid["rows"] == ["unguided", "cfg"]


def test_base_prediction_values_are_checked():
    with pytest.raises(ValueError, match="base_prediction must be auto, eps or velocity, got 'flow'"):
        resolve_config(None, sets=FINETUNE_SETS + ["base_prediction=flow"])
    with pytest.raises(ValueError, match=r"base_prediction='velocity' applies to a base checkpoint, but "
                                         r"init='scratch'"):
        resolve_config("cpu-tiny", sets=["base_prediction=velocity"])


@pytest.fixture(scope="module")
def raw_sit_base(tmp_path_factory) -> Path:
    """A tiny SiT-T/2 (4x4x4 latents of the tiny VAE, 10 classes + null) saved as a raw state dict, like
    the official SiT-XL-2-256x256.pt: nothing in the file says that it predicts velocity."""
    torch.manual_seed(0)
    net = DiT(dit_config("SiT-T/2", input_size=4, num_classes=10))
    path = tmp_path_factory.mktemp("raw-sit") / "SiT-T-2.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.parametrize("declared, prediction, sampler", [("velocity", "velocity", "ode-heun"),
                                                            ("auto", "eps", "ddim")])
def test_raw_sit_base_is_fine_tuned_as_declared(tmp_path, raw_sit_base, tiny_vae_dir, declared, prediction, sampler):
    cfg = tiny_config(tmp_path / "run", f"base={raw_sit_base}", f"base_prediction={declared}", f"vae={tiny_vae_dir}",
                      "data.dataset=digits", "data.classes=[3, 4]", "steps=2", "sample_every=2", "grid.num=2",
                      "grid.steps=2", "model_overrides={}", preset=None)
    result = train(cfg)
    loaded = load_model(result.checkpoint)
    assert loaded.config.prediction == prediction and loaded.config.num_classes == 2
    grid = json.loads((result.run_dir / "grids" / "step_0000002.json").read_text())
    assert grid["sampler"] == sampler and grid["rows"] == ["unguided", "cfg", "dog"]
