import numpy as np
import pytest
import torch

from domain_guidance.core.diffusion import create_diffusion, space_timesteps


def test_respacing_map():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    steps = sorted(space_timesteps(1000, "250"))
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    assert sorted(space_timesteps(100, "10,5")) == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49, 50, 62, 74, 87, 99]
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")  # no stride gives exactly 999 steps
    with pytest.raises(ValueError):
        space_timesteps(10, "11")


def test_respaced_diffusion_keeps_marginals_and_maps_to_original_steps():
    full = create_diffusion("")
    spaced = create_diffusion("50")
    kept = sorted(space_timesteps(1000, "50"))
    assert spaced.num_timesteps == 50
    assert spaced.timestep_map.tolist() == kept
    np.testing.assert_allclose(spaced.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-12)


def test_reverse_variance_closed_form_1000_steps():
    d = create_diffusion("")
    betas = np.linspace(1e-4, 0.02, 1000)
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    posterior = betas * (1 - ac_prev) / (1 - ac)
    t = torch.arange(1000)
    x = torch.zeros(1000, 1, 1, 1)
    for v, expected in ((-1.0, np.append(posterior[1], posterior[1:])), (1.0, betas)):
        out = d.p_mean_variance(torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1), x, t)
        np.testing.assert_allclose(out["variance"].flatten().numpy(), expected, rtol=1e-5)
    # interpolation is geometric in the variance (linear in log)
    out = d.p_mean_variance(torch.cat([torch.zeros_like(x), torch.zeros_like(x)], 1), x, t)
    np.testing.assert_allclose(out["variance"].flatten().numpy()[1:], np.sqrt(posterior * betas)[1:], rtol=1e-5)


def test_posterior_mean_closed_form():
    d = create_diffusion("")
    t = torch.tensor([0, 10, 500, 999])
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    xt = d.q_sample(x0, t, eps)
    out = d.p_mean_variance(torch.cat([eps, torch.zeros_like(eps)], 1), xt, t)
    betas = np.linspace(1e-4, 0.02, 1000)  # by hand, float64
    ac_all = np.cumprod(1 - betas)
    ac = torch.tensor(ac_all)[t][:, None]
    ac_prev = torch.tensor(np.append(1.0, ac_all[:-1]))[t][:, None]
    beta = torch.tensor(betas)[t][:, None]
    # x0 from eps, in float64 from the same float32 x_t: float32 round-off is amplified by 1/sqrt(abar_t)
    # (157 at t = 999), so the bound is a few ulps of the two terms that cancel, not a fixed 2e-3
    a, b = (1 / ac).sqrt() * xt.double(), (1 / ac - 1).sqrt() * eps.double()
    ulp = torch.finfo(torch.float32).eps
    err = (out["pred_xstart"].double() - (a - b)).abs()
    assert (err <= 4 * ulp * (a.abs() + b.abs()) + 1e-12).all(), err
    torch.testing.assert_close(out["pred_xstart"][:3], x0[:3], atol=1e-6, rtol=0)  # t <= 500: float32 exact
    mean = (beta * ac_prev.sqrt() / (1 - ac)) * x0.double() + ((1 - ac_prev) * (1 - beta).sqrt() / (1 - ac)) * xt.double()
    torch.testing.assert_close(out["mean"].double(), mean, atol=1e-6, rtol=0)  # measured <= 2.4e-7 over 20 seeds


@pytest.mark.parametrize("spec", ["50", "ddim25", "10,5"])
def test_respaced_betas_and_posterior_variance_by_hand(spec):
    """Respaced beta_i = 1 - abar(t_i) / abar(t_{i-1}) and posterior variance
    beta_i (1 - abar_prev) / (1 - abar_i), all from the 1000-step linear schedule in float64."""
    d = create_diffusion(spec)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    kept = sorted(space_timesteps(1000, spec))
    abar_t = abar[kept]
    abar_prev = np.append(1.0, abar_t[:-1])
    betas = 1 - abar_t / abar_prev
    np.testing.assert_allclose(d.betas, betas, rtol=1e-12, atol=0)
    assert not np.allclose(betas, np.linspace(1e-4, 0.02, 1000)[kept])  # not the original betas at kept steps
    posterior = betas * (1 - abar_prev) / (1 - abar_t)
    np.testing.assert_allclose(d.posterior_variance, posterior, rtol=1e-12, atol=0)
    assert d.posterior_variance[0] == 0.0
    # the sampler's variances at both ends of the learned range, on the respaced chain (float32 round-off)
    n = len(kept)
    t = torch.arange(n)
    x = torch.zeros(n, 1, 1, 1)
    for v, expected in ((-1.0, np.append(posterior[1], posterior[1:])), (1.0, betas)):
        out = d.p_mean_variance(torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1), x, t)
        np.testing.assert_allclose(out["variance"].flatten().numpy(), expected, rtol=2e-6)


def test_ddim_deterministic_and_exact_inversion_of_q_sample():
    """With the true eps of a point mass, one DDIM step lands on q(x_{t-1}|x0) without noise."""
    d = create_diffusion("ddim10")
    x0, eps = torch.randn(2, 4), torch.randn(2, 4)
    t = torch.tensor([5, 5])
    xt = d.q_sample(x0, t, eps)
    out = d.ddim_step(torch.cat([eps, torch.zeros_like(eps)], 1), xt, t, torch.randn(2, 4), eta=0.0)
    expected = d.q_sample(x0, t - 1, eps)
    torch.testing.assert_close(out["sample"], expected, atol=1e-5, rtol=0)


def test_training_losses_terms():
    d = create_diffusion("")
    x0, noise = torch.rand(3, 2, 4, 4) * 2 - 1, torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 1, 999])
    xt = d.q_sample(x0, t, noise)
    out = torch.cat([noise, torch.zeros_like(noise)], 1).requires_grad_(True)
    terms = d.training_losses(out, x0, xt, t, noise)
    assert torch.allclose(terms["mse"], torch.zeros(3))
    assert (terms["vb"] >= 0).all() and torch.isfinite(terms["loss"]).all()
    terms["loss"].sum().backward()
    assert out.grad[:, :2].abs().max() == 0  # the bound term does not train eps
    assert out.grad[:, 2:].abs().max() > 0
