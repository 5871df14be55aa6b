"""Autoguidance through the generation pipeline: an explicit guide checkpoint (an earlier one of the same run)."""
from __future__ import annotations

import pytest
import torch

from domain_guidance.pipelines.generate import GenerationSettings, load_models, settings_key
from domain_guidance.pipelines.generate.models import build_denoiser, sample_images
from domain_guidance.pipelines.training import train

from ..training.conftest import tiny_base, tiny_config  # noqa: F401  (session fixture)


def _settings(method: str, scale: float = 2.0) -> GenerationSettings:
    return GenerationSettings(method=method, scale=scale, sampler="ddim", steps="4", seeds=[0, 1, 2], labels=[0, 1, 0],
                              clip_denoised=False)


def test_autoguidance_with_an_earlier_checkpoint(tmp_path, tiny_base):  # noqa: F811
    torch.set_num_threads(1)
    run = train(tiny_config(tmp_path / "ft", f"base={tiny_base}", "data.dataset=digits", "data.classes=[3, 4]",
                            "steps=4", "ckpt_every=2", "keep_last=2", "lr=3e-3", "ema.decay=0", preset=None))
    early = run.run_dir / "checkpoints" / "step_0000002"
    models = load_models(str(run.checkpoint), str(tiny_base), autoguide=str(early))
    assert "autoguidance" in models.methods()
    auto = sample_images(_settings("autoguidance"), models, decode=False)
    den = build_denoiser(_settings("autoguidance"), models)
    assert den.guide_label == "cond" and den.uncond.net is models.autoguide.net
    unguided = sample_images(_settings("unguided"), models, decode=False)
    dog = sample_images(_settings("dog"), models, decode=False)
    assert not torch.allclose(auto, unguided) and not torch.allclose(auto, dog)
    # the guide checkpoint is part of the settings key (another guide, other pixels)
    same = load_models(str(run.checkpoint), str(tiny_base), autoguide=str(run.checkpoint))
    assert settings_key(_settings("autoguidance"), same) != settings_key(_settings("autoguidance"), models)
    # guide = the model itself: autoguidance is unguided, whatever w
    assert torch.equal(sample_images(_settings("autoguidance", 3.0), same, decode=False), unguided)
    no_guide = load_models(str(run.checkpoint), str(tiny_base))
    with pytest.raises(ValueError, match="autoguidance needs its guide checkpoint"):
        build_denoiser(_settings("autoguidance"), no_guide)
    with pytest.raises(ValueError, match="the model has 2 classes, the guide 10"):
        build_denoiser(_settings("autoguidance"), load_models(str(run.checkpoint), autoguide=str(tiny_base)))
