"""Single-pass DoG options that follow DogFit's released scripts: the cut-off side per model, the uniform w draw
and the exponential rate rule, each against the release's formula written out."""
from __future__ import annotations

import math

import pytest
import torch

from domain_guidance.core.seeds import PerSampleNoise
from domain_guidance.pipelines.training.config import SinglePassConfig
from domain_guidance.pipelines.training.single_pass import SinglePassTarget, draw_w, exponential_rate

from ..training.conftest import tiny_config


def _target(flow: bool, **cfg) -> SinglePassTarget:
    return SinglePassTarget(SinglePassConfig(enabled=True, w=2.0, **cfg), torch.nn.Identity(), torch.nn.Identity(),
                            10, False, flow, 1 if flow else 1000, 4)


def test_cutoff_sides_and_the_release_rule_per_model():
    mg_high, kept = 0.5, torch.ones(6, dtype=torch.bool)
    dit_t = torch.tensor([0, 400, 499, 500, 999, 700])
    sit_t = torch.tensor([0.0, 0.1, 0.45, 0.5, 0.55, 0.9])  # SiT time, 0 = noise
    # DogFit's scripts, written out: DiT `t / (T - 1) < mg_high`, SiT `t < mg_high`
    dit_release = (dit_t.float() / 999 < mg_high).tolist()
    sit_release = (sit_t < mg_high).tolist()
    assert dit_release == [True, True, True, False, False, False] and sit_release == [True, True, True, False,
                                                                                       False, False]
    assert _target(False, cutoff=mg_high, cutoff_side="release").active(dit_t, 1, kept).tolist() == dit_release
    assert _target(True, cutoff=mg_high, cutoff_side="release").active(sit_t, 1, kept).tolist() == sit_release
    # ours by default: the low-noise end for both (SiT: 1 - t < cutoff, the opposite end of the SiT script)
    assert _target(False, cutoff=mg_high).active(dit_t, 1, kept).tolist() == dit_release
    assert _target(True, cutoff=mg_high).active(sit_t, 1, kept).tolist() == [False, False, False, False, True, True]
    # high-noise on DiT: the share at the noisy end
    assert _target(False, cutoff=0.3, cutoff_side="high-noise").active(dit_t, 1, kept).tolist() == [
        False, False, False, False, True, True]
    assert _target(True, cutoff=mg_high, cutoff_side="release").record(None)["cutoff_side"] == "high-noise"


def test_uniform_w_and_the_release_rate():
    w = draw_w(PerSampleNoise(range(4000)), 1.0, 5.0, "uniform", 1.0)
    assert 1.0 <= w.min() and w.max() < 5.0 and abs(w.mean().item() - 3.0) < 0.08  # U[1, 5): mean 3
    assert abs((w < 2.0).float().mean().item() - 0.25) < 0.03
    assert torch.equal(draw_w(PerSampleNoise([7, 8]), 1.0, 5.0, "uniform", 1.0), w[7:9])  # per-sample seeds
    u, p = 3.0, 0.9
    rate = exponential_rate(u, p)
    assert rate == pytest.approx(-math.log(1 - p) / (u - 1), rel=1e-12)
    target = _target(False, w_cond=True, w_rate_from=[u, p])
    drawn = target.weights(PerSampleNoise(range(4000)))
    assert abs((drawn < u).float().mean().item() - p) < 0.02 and drawn.min() >= 1.0  # a share p below U
    assert target.record(None)["w_rate"] == pytest.approx(rate)
    uniform = _target(False, w_cond=True, w_dist="uniform", w_min=2.0, w_max=7.0)
    drawn = uniform.weights(PerSampleNoise(range(500)))
    assert 2.0 <= drawn.min() and drawn.max() < 7.0 and uniform.record(None)["w_dist"] == "uniform"


def test_release_options_are_checked(tmp_path):
    base = ["data.dataset=digits", "steps=3", "single_pass.enabled=true", "base=x.pt"]
    with pytest.raises(ValueError, match="cutoff_side must be"):
        tiny_config(tmp_path / "a", *base, "single_pass.cutoff_side=middle", preset=None)
    with pytest.raises(ValueError, match="w_dist=uniform draws w in"):
        tiny_config(tmp_path / "b", *base, "single_pass.w_cond=true", "single_pass.w_dist=uniform", preset=None)
    with pytest.raises(ValueError, match="w_rate_from must be"):
        tiny_config(tmp_path / "c", *base, "single_pass.w_cond=true", "single_pass.w_rate_from=[3, 1.5]", preset=None)
    ok = tiny_config(tmp_path / "d", *base, "single_pass.w_cond=true", "single_pass.w_dist=uniform",
                     "single_pass.w_max=3", preset=None)
    assert (ok.single_pass.w_dist, ok.single_pass.w_min, ok.single_pass.w_max) == ("uniform", 1.0, 3.0)


def test_difffit_preset_is_the_published_recipe_at_ten_times_the_rate():
    """DiffFit's paper trains best at about 10x the rate: the preset says so instead of inheriting 1e-4."""
    from domain_guidance.pipelines.training import resolve_config

    over = {"base": "DiT-XL-2-256x256.pt", "data": {"dataset": "target"}}
    difffit = resolve_config("dit-xl2-imagenet-difffit", overrides=over).to_dict()
    published = resolve_config("dit-xl2-imagenet-published", overrides=over).to_dict()
    assert (difffit["mode"], difffit["lr"]) == ("difffit", 10 * published["lr"])
    differ = sorted(k for k in published if difffit[k] != published[k])
    assert differ == ["lr", "mode", "out", "preset"]  # everything else: the published recipe
