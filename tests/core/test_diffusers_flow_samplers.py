"""diffusers' flow-matching schedulers as samplers of velocity (SiT) models (core.diffusers_samplers, flow-*):
the exact flow map of Gaussian data is reached (SiT time t = 1 - sigma, diffusers' flow prediction = -v), each
equals a direct diffusers loop on a DoG-guided tiny SiT, batch / seed-order invariance, the model kinds refused."""
from __future__ import annotations

import diffusers
import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.diffusers_samplers import FLOW_SCHEDULERS
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.sampling import SAMPLERS, check_prediction, sample, sample_from_seeds
from tests.core.helpers import tiny_dit
from tests.core.test_flow import S, GaussianFlow, _noise

SHAPE, W = (3, 8, 8), 2.0


@pytest.mark.parametrize("name, steps, options, tol", [
    ("flow-dpm-solver++", 10, {}, 0.02), ("flow-dpm-solver++", 20, {"order": 3}, 0.03),
    ("flow-unipc", 20, {}, 0.03), ("flow-euler", 100, {}, 0.05), ("flow-heun", 20, {}, 0.005)])
def test_flow_schedulers_reach_the_exact_flow_map_of_gaussian_data(name, steps, options, tol):
    z, labels = _noise(64), torch.arange(64) % 2
    exact = GaussianFlow().mean(labels, z) + S * z  # the ODE's flow map at t = 1
    g = GaussianFlow()
    err = (sample(g, z, labels, sampler=name, steps=steps, **options) - exact).abs().max().item()
    assert err < tol, (name, err)
    assert min(g.times) < 0.002 and max(g.times) > 0.9  # called in SiT time, from noise (t ~ 0) towards data


def test_flow_euler_is_first_order():
    z, labels = _noise(64), torch.arange(64) % 2
    exact = GaussianFlow().mean(labels, z) + S * z
    e50, e100 = ((sample(GaussianFlow(), z, labels, sampler="flow-euler", steps=n) - exact).abs().max().item()
                 for n in (50, 100))
    assert 1.7 < e50 / e100 < 2.3, (e50, e100)


def _sit_pair():
    pre = tiny_dit(num_classes=10, seed=1, in_channels=3, latent=False, prediction="velocity")
    ft = tiny_dit(num_classes=3, seed=2, in_channels=3, latent=False, prediction="velocity")
    return pre, ft


def _direct(name, config, pre, ft, seeds, labels, steps):
    """The diffusers loop of a flow pipeline, SiT's network at t = 1 - sigma, handed noise - data = -v."""
    cls = getattr(diffusers, FLOW_SCHEDULERS[name])
    flow_sigmas = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"} if "dpm" in name or "unipc" in name \
        else {}
    scheduler = cls(num_train_timesteps=1000, **flow_sigmas, **config)
    scheduler.set_timesteps(steps)
    x = torch.stack([torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)) for s in seeds])
    null = torch.full_like(labels, pre.config.null_label)
    for i, t in enumerate(scheduler.timesteps):
        tt = (1 - scheduler.sigmas[i].double()).float().expand(len(x))
        with torch.no_grad():
            cond, uncond = ft(x, tt, labels)[:, :3], pre(x, tt, null)[:, :3]
        x = scheduler.step(-(uncond + W * (cond - uncond)), t, x).prev_sample
    return x


@pytest.mark.parametrize("name, options", [("flow-dpm-solver++", {}), ("flow-unipc", {"order": 3}),
                                           ("flow-euler", {"shift": 3.0}), ("flow-heun", {})])
def test_equals_a_direct_diffusers_loop(name, options):
    pre, ft = _sit_pair()
    g = build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=W)
    seeds, labels = [3, 11], torch.tensor([0, 2])
    ours = sample_from_seeds(g, seeds, labels, SHAPE, sampler=name, steps=5, **options)
    config = {{"order": "solver_order", "shift": "flow_shift" if "dpm" in name or "unipc" in name else "shift"}
              .get(k, k): v for k, v in options.items()}
    ref = _direct(name, config, pre, ft, seeds, labels, 5)
    assert torch.allclose(ours, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)


def test_batch_and_seed_order_invariant():
    pre, ft = _sit_pair()
    g = build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=W)
    kw = dict(shape=SHAPE, sampler="flow-dpm-solver++", steps=6, algorithm_type="sde-dpmsolver++")
    whole = sample_from_seeds(g, [1, 3, 5], torch.tensor([0, 1, 2]), **kw)
    single = sample_from_seeds(g, [5, 1], torch.tensor([2, 0]), **kw)
    tol = dict(atol=1e-5 * float(whole.abs().max()), rtol=0)
    assert torch.allclose(single[0], whole[2], **tol) and torch.allclose(single[1], whole[0], **tol)


def test_each_kind_refuses_the_other():
    sit, dit = tiny_dit(num_classes=3, prediction="velocity"), tiny_dit(num_classes=3)
    for name in FLOW_SCHEDULERS:
        with pytest.raises(ValueError, match="integrates velocity predictions, but the model predicts 'eps'.*ddpm"):
            check_prediction(SAMPLERS[name], Denoiser(dit, dit.config))
    with pytest.raises(ValueError, match="predicts 'velocity'; samplers for 'velocity' models: .*flow-dpm-solver"):
        check_prediction(SAMPLERS["dpm-solver++"], Denoiser(sit, sit.config))
    assert SAMPLERS["flow-euler"].time_range == (0.0, 1.0)


def test_callback_data_estimate_is_the_last_sample():
    z, labels, seen = _noise(8), torch.arange(8) % 2, []
    x = sample(GaussianFlow(), z, labels, sampler="flow-dpm-solver++", steps=6, callback=seen.append)
    assert len(seen) == 6 and torch.allclose(seen[-1]["denoised"], x.double(), atol=1e-5)
