"""PRDC and KID on synthetic feature sets with known answers, and against brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from domain_guidance.pipelines.metrics.kid import kid, mmd2_unbiased
from domain_guidance.pipelines.metrics.prdc import knn_radii, prdc


def _prdc_brute(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Direct transcription of the definitions with full distance matrices."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    r_rad = np.sort(dist(real, real), axis=1)[:, k]
    f_rad = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)  # (N_r, N_f)
    return {
        "precision": float((d < r_rad[:, None]).any(axis=0).mean()),
        "recall": float((d < f_rad[None, :]).any(axis=1).mean()),
        "density": float((d < r_rad[:, None]).sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) < r_rad).mean()),
    }


def test_identical_sets_are_perfect():
    x = np.random.default_rng(0).normal(size=(60, 8))
    out = prdc(x, x, k=5)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    assert out["density"] >= 1.0 / 5


def test_far_apart_sets_score_zero():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 8)), rng.normal(size=(50, 8)) + 1000.0
    assert prdc(real, fake, k=5) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_matches_brute_force_on_overlapping_sets():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(70, 6)), rng.normal(size=(55, 6)) * 1.3 + 0.4
    real32 = real.astype(np.float32)  # a float32 tensor input is promoted to float64 inside
    ours, ref = prdc(torch.from_numpy(real32), fake, k=3), _prdc_brute(real32.astype(np.float64), fake, 3)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


def test_knn_radius_excludes_self_and_checks_k():
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="k < N"):
        prdc(np.zeros((5, 2)), np.zeros((9, 2)), k=5)


def test_mmd2_unbiased_matches_loops():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    kf = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    m = 6
    xx = sum(kf(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kf(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(kf(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_same_distribution_near_zero_and_shifted_positive():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same = kid(a, b, n_subsets=20, subset_size=200, seed=0)
    shifted = kid(a, b + 0.5, n_subsets=20, subset_size=200, seed=0)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"] + 1e-3
    assert shifted["kid_mean"] > 10 * abs(same["kid_mean"]) and shifted["kid_mean"] > 0.01
    assert same == kid(a, b, n_subsets=20, subset_size=200, seed=0)  # seeded


def test_kid_subset_size_drops_to_smallest_set():
    rng = np.random.default_rng(5)
    out = kid(rng.normal(size=(30, 4)), rng.normal(size=(20, 4)), n_subsets=3, subset_size=1000)
    assert out["kid_subset_size"] == 20
    with pytest.raises(ValueError, match="at least 2"):
        kid(np.zeros((1, 4)), np.zeros((5, 4)))


def test_kid_of_whole_sets_has_no_subset_spread():
    """Subset size = both set sizes: every subset is all of both sets (reordered), so the estimate is one
    value and its std is exactly 0 on every CPU (summing the same kernel values in another order would
    leave a CPU-dependent rounding noise of ~1e-16 instead). A larger set still gives subsets that differ."""
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(8, 16)), rng.normal(size=(8, 16)) + 0.3
    whole = kid(a, b, n_subsets=20, subset_size=1000)
    assert whole == {"kid_mean": mmd2_unbiased(a, b), "kid_std": 0.0, "kid_subset_size": 8}
    larger = kid(np.concatenate([a, rng.normal(size=(4, 16))]), b, n_subsets=20, subset_size=1000)
    assert larger["kid_subset_size"] == 8 and larger["kid_std"] > 1e-3
