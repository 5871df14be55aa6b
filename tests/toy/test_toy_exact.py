"""Closed-form mixtures: noisy scores against autograd, and the core samplers on 2-D points."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.pipelines.toy.exact import ALPHAS_CUMPROD, ExactDenoiser, GaussianMixture, noisy_eps
from domain_guidance.pipelines.toy.sampling import sample_points

F64 = torch.float64


def random_mixture(m: int, shared: bool, seed: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(m, 2, dtype=F64, generator=g)
    a = 0.5 * torch.randn(1 if shared else m, 2, 2, dtype=F64, generator=g)
    covs = (a @ a.transpose(-1, -2) + 0.05 * torch.eye(2, dtype=F64)).expand(m, 2, 2).clone()
    weights = torch.rand(m, dtype=F64, generator=g) + 0.2
    return GaussianMixture(means, covs, weights / weights.sum())


def reference_log_density(mix: GaussianMixture, ab: float) -> MixtureSameFamily:
    """The noised mixture built independently with torch.distributions."""
    comps = MultivariateNormal(math.sqrt(ab) * mix.means, ab * mix.covs + (1 - ab) * torch.eye(2, dtype=F64))
    return MixtureSameFamily(Categorical(probs=mix.weights), comps)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("t", [0, 10, 200, 500, 999])
def test_noisy_eps_matches_autograd_of_noised_log_density(shared, t):
    mix = random_mixture(5, shared, seed=t + 7 * shared)
    assert mix.shared_cov == shared
    ab = float(ALPHAS_CUMPROD[t])
    g = torch.Generator().manual_seed(1)
    # points near the noised data and far in the tails (logsumexp must hold there)
    x = torch.cat([math.sqrt(ab) * mix.sample(200, g)[0] + math.sqrt(1 - ab) * torch.randn(200, 2, dtype=F64, generator=g),
                   30 * torch.randn(20, 2, dtype=F64, generator=g)])
    x.requires_grad_(True)
    ref = reference_log_density(mix, ab)
    (score,) = torch.autograd.grad(ref.log_prob(x).sum(), x)
    eps = noisy_eps(mix, x.detach(), torch.full((len(x),), t))
    assert eps.dtype == F64
    torch.testing.assert_close(eps, -math.sqrt(1 - ab) * score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mix.noised(ab).log_prob(x.detach()), ref.log_prob(x.detach()), rtol=1e-10, atol=1e-10)


def test_noised_mixture_has_the_moments_of_the_forward_process():
    mix = random_mixture(3, False, seed=3)
    ab = float(ALPHAS_CUMPROD[300])
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0, _ = mix.sample(n, g)
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(n, 2, dtype=F64, generator=g)
    noised = mix.noised(ab)
    mean = (noised.weights[:, None] * noised.means).sum(0)
    centred = noised.means - mean
    cov = (noised.weights[:, None, None] * (noised.covs + centred[:, :, None] * centred[:, None, :])).sum(0)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert ((xt.mean(0) - mean).abs() < 5 * se_mean).all()
    emp_cov = torch.from_numpy(np.cov(xt.numpy().T))
    se_cov = torch.sqrt((torch.diagonal(cov)[:, None] * torch.diagonal(cov)[None] + cov ** 2) / n)
    assert ((emp_cov - cov).abs() < 5 * se_cov).all()


def test_exact_denoiser_routes_labels_and_rejects_unknown():
    a, b = random_mixture(2, True, 0), random_mixture(3, False, 1)
    marg = GaussianMixture.concat([a, b])
    den = ExactDenoiser([a, b], marg)
    assert den.null_label == 2 and den.data_channels == 2
    x = torch.randn(6, 2, dtype=F64)
    t = torch.tensor([5, 5, 100, 100, 900, 900])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = den(x, t, labels)
    for i, law in enumerate([a, b, marg, a, b, marg]):
        torch.testing.assert_close(out[i:i + 1], noisy_eps(law, x[i:i + 1], t[i:i + 1]))
    with pytest.raises(ValueError, match="label 3 out of range"):
        den(x[:1], t[:1], torch.tensor([3]))


SINGLE_MEAN = np.array([[1.0, -0.5]])
SINGLE_COV = np.array([[[0.5, 0.2], [0.2, 0.3]]])


@pytest.mark.parametrize("sampler,steps", [("ddpm", 250), ("ddim", 250)])
def test_sampler_recovers_mean_and_covariance_of_a_gaussian(sampler, steps):
    gauss = GaussianMixture(SINGLE_MEAN, SINGLE_COV, [1.0])
    n = 4000
    x = sample_points(ExactDenoiser([gauss], gauss), torch.zeros(n, dtype=torch.long), run_seed=0,
                      sampler=sampler, steps=steps).numpy()
    cov = SINGLE_COV[0]
    var = np.diag(cov)
    assert np.all(np.abs(x.mean(0) - SINGLE_MEAN[0]) < 4 * np.sqrt(var / n))
    se_cov = np.sqrt((var[:, None] * var[None] + cov ** 2) / n)  # sampling s.e. of a Gaussian covariance
    assert np.all(np.abs(np.cov(x.T) - cov) < 4 * se_cov), (np.cov(x.T), cov)


def test_core_sampler_with_per_sample_noise_on_points_is_batch_invariant():
    """core.sample_from_seeds on (N, 2) tensors with learn_sigma=False; point i depends only on seed i."""
    gauss = GaussianMixture(SINGLE_MEAN, SINGLE_COV, [1.0])
    den = ExactDenoiser([gauss], gauss)
    kw = dict(sampler="ddpm", steps=20)  # the exact denoiser declares learn_sigma=False
    full = sample_from_seeds(den, [3, 4, 5, 6], torch.zeros(4, dtype=torch.long), (2,), **kw)
    part = sample_from_seeds(den, [5, 6], torch.zeros(2, dtype=torch.long), (2,), **kw)
    assert full.shape == (4, 2) and torch.isfinite(full).all()
    torch.testing.assert_close(full[2:], part)
    # the toy's pre-drawn trajectories: same property
    a = sample_points(den, torch.zeros(6, dtype=torch.long), run_seed=2, steps=20)
    b = sample_points(den, torch.zeros(3, dtype=torch.long), run_seed=2, steps=20)
    torch.testing.assert_close(a[:3], b)
