"""Kernel Inception Distance (Binkowski et al. 2018) as torch-fidelity / clean-fid compute it.

Polynomial kernel k(x, y) = (x.y / D + 1)^3; the unbiased MMD^2 estimate is averaged over
``n_subsets`` random subsets of ``subset_size`` features drawn without replacement from each
set (100 x 1000 by default). When a set is smaller than ``subset_size``, the subset size
drops to the smaller set size (clean-fid's rule; torch-fidelity refuses instead) and the
size actually used is returned.
"""
from __future__ import annotations

import numpy as np
import torch


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """(m, D), (n, D) -> (m, n) kernel matrix (x y^T / D + coef0)^degree."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 between two equally sized samples (m, D) with the polynomial kernel."""
    m = x.shape[0]
    if m < 2 or y.shape[0] != m:
        raise ValueError(f"need two samples of the same size >= 2, got {x.shape[0]} and {y.shape[0]}")
    kxx = polynomial_kernel(x, x, degree, coef0)  # (m, m)
    kyy = polynomial_kernel(y, y, degree, coef0)  # (m, m)
    kxy = polynomial_kernel(x, y, degree, coef0)  # (m, m)
    off_xx = kxx.sum() - np.trace(kxx)
    off_yy = kyy.sum() - np.trace(kyy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, n_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0, degree: int = 3, coef0: float = 1.0) -> dict[str, float]:
    """KID between (N_r, D) and (N_f, D) features: {"kid_mean", "kid_std", "kid_subset_size"}.

    ``kid_std`` is the standard deviation of the per-subset estimates (ddof 0, as
    torch-fidelity reports it). Subsets are drawn from ``np.random.default_rng(seed)``.
    When the subset size is both sets' size, every subset is the whole of both sets (reordered)
    and the estimate cannot vary: it is computed once and ``kid_std`` is exactly 0, not the
    CPU-dependent rounding noise of summing the same numbers in another order.
    """
    r = real.detach().cpu().double().numpy() if isinstance(real, torch.Tensor) else np.asarray(real, np.float64)
    f = fake.detach().cpu().double().numpy() if isinstance(fake, torch.Tensor) else np.asarray(fake, np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"expected (N, D) features with the same D, got {r.shape} and {f.shape}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    m = min(subset_size, r.shape[0], f.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {r.shape[0]} and {f.shape[0]}")
    if m == r.shape[0] == f.shape[0]:  # every subset is all of both sets: one value, no spread
        return {"kid_mean": mmd2_unbiased(r, f, degree, coef0), "kid_std": 0.0, "kid_subset_size": m}
    rng = np.random.default_rng(seed)
    values = np.empty(n_subsets)
    for i in range(n_subsets):
        xs = r[rng.choice(r.shape[0], m, replace=False)]  # (m, D)
        ys = f[rng.choice(f.shape[0], m, replace=False)]  # (m, D)
        values[i] = mmd2_unbiased(xs, ys, degree, coef0)
    return {"kid_mean": float(values.mean()), "kid_std": float(values.std()), "kid_subset_size": m}
