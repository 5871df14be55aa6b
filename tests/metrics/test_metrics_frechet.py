"""Frechet distance and streamed Gaussian statistics."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from domain_guidance.pipelines.metrics.frechet import (
    GaussianAccumulator, frechet_distance, frechet_distance_from_features, gaussian_stats,
)


def _fd_eig(mu1, s1, mu2, s2) -> float:
    """Independent formula: tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), all symmetric."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.sum(np.sqrt(np.clip(lam, 0, None))))


def _random_cov(rng, d, n=None):
    a = rng.normal(size=(d, n or 2 * d))
    return a @ a.T / a.shape[1]


def test_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3, size=d), rng.uniform(0.1, 3, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_matches_eigenvalue_formula_full_covariances():
    rng = np.random.default_rng(1)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fd_eig(mu1, s1, mu2, s2), rel=1e-8)


def test_eigh_method_equals_sqrtm_method():
    rng = np.random.default_rng(5)
    d = 40
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d, n=25)  # one singular covariance
    a = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    b = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    assert b == pytest.approx(a, rel=1e-6)
    with pytest.raises(ValueError, match="'sqrtm' or 'eigh'"):
        frechet_distance(mu1, s1, mu2, s2, method="svd")


def test_rank_deficient_covariances_still_finite_and_close():
    rng = np.random.default_rng(2)
    d = 24
    s1, s2 = _random_cov(rng, d, n=10), _random_cov(rng, d, n=12)  # ranks 10 and 12 < 24
    mu = np.zeros(d)
    value = frechet_distance(mu, s1, mu, s2)
    assert np.isfinite(value)
    assert value == pytest.approx(_fd_eig(mu, s1, mu, s2), rel=1e-4, abs=1e-4)


def test_set_against_itself_is_zero():
    feats = torch.randn(200, 8, dtype=torch.float64) * 3 + 5
    assert frechet_distance_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_streaming_matches_np_cov_for_any_batching():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(301, 10)) * 0.1 + 1e4  # large mean: the naive formula would cancel
    mu_ref, cov_ref = x.mean(0), np.cov(x, rowvar=False)
    for bs in (1, 7, 64, 301):
        acc = GaussianAccumulator()
        for s in range(0, len(x), bs):
            acc.update(x[s:s + bs])
        mu, cov = acc.finalize()
        assert mu.dtype == np.float64 and cov.dtype == np.float64
        np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)
        np.testing.assert_allclose(cov, cov_ref, rtol=1e-8, atol=1e-12)


def test_too_few_images_refused_and_rank_warning():
    with pytest.raises(ValueError, match="at least 2 images"):
        gaussian_stats(np.ones((1, 4)))
    with pytest.warns(RuntimeWarning, match="rank deficient"):
        gaussian_stats(np.random.default_rng(0).normal(size=(5, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaussian_stats(np.random.default_rng(0).normal(size=(9, 8)))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    acc = GaussianAccumulator()
    acc.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dimension changed"):
        acc.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        GaussianAccumulator().update(np.full((2, 3), np.nan))


def test_svd_method_equals_the_covariance_route():
    from domain_guidance.pipelines.metrics.frechet import frechet_distance_from_features

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 300)), rng.normal(0.3, 1.2, size=(25, 300))
    expected = frechet_distance_from_features(a, b, method="eigh")
    assert frechet_distance_from_features(a, b, method="svd") == pytest.approx(expected, rel=1e-6)
    assert frechet_distance_from_features(a, a, method="svd") == pytest.approx(0.0, abs=1e-9)
