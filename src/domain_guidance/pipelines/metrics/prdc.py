"""Precision, recall, density and coverage (Naeem et al., ICML 2020), k-NN balls in feature space.

Same definitions as the authors' ``prdc`` package: the radius of a point is the Euclidean
distance to its k-th nearest neighbour in its own set (itself excluded), and a point lies in
a ball when its distance is strictly below the radius.

- precision: share of fake points inside at least one real ball;
- recall:    share of real points inside at least one fake ball;
- density:   mean over fake points of (number of real balls containing it) / k;
- coverage:  share of real balls that contain at least one fake point.

Distances are computed in float64 and in row chunks, so memory stays O(chunk * N).
"""
from __future__ import annotations

import numpy as np
import torch

_CHUNK = 1024


def _as_f64(x: np.ndarray | torch.Tensor, who: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to("cpu", torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{who} features must have shape (N, D), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{who} features contain NaN or inf")
    return t


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, D) -> (N,) distance of each point to its k-th nearest other point."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k-NN radius needs 1 <= k < N, got k={k} with N={n} points")
    out = torch.empty(n, dtype=x.dtype)
    for s in range(0, n, _CHUNK):
        d = torch.cdist(x[s:s + _CHUNK], x)  # (chunk, N), includes the zero self-distance
        out[s:s + _CHUNK] = d.topk(k + 1, dim=1, largest=False).values[:, -1]
    return out


def prdc(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` (N_f, D) against ``real`` (N_r, D)."""
    r, f = _as_f64(real, "real"), _as_f64(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: real {r.shape[1]}, fake {f.shape[1]}")
    r_radii = knn_radii(r, k)  # (N_r,)
    f_radii = knn_radii(f, k)  # (N_f,)
    in_real_balls = torch.zeros(f.shape[0], dtype=torch.float64)  # (N_f,) count of real balls
    real_recalled = torch.zeros(r.shape[0], dtype=torch.bool)  # (N_r,)
    real_nn_dist = torch.full((r.shape[0],), float("inf"), dtype=torch.float64)  # (N_r,)
    for s in range(0, f.shape[0], _CHUNK):
        d = torch.cdist(f[s:s + _CHUNK], r)  # (chunk, N_r)
        in_real_balls[s:s + _CHUNK] = (d < r_radii[None, :]).sum(dim=1).double()
        real_recalled |= (d < f_radii[s:s + _CHUNK, None]).any(dim=0)
        real_nn_dist = torch.minimum(real_nn_dist, d.min(dim=0).values)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(in_real_balls.mean() / k),
        "coverage": float((real_nn_dist < r_radii).double().mean()),
    }
