"""Metrics of one set of 2-D samples against the true target classes, and their seed statistics.

- ``ood_rate``: share of samples outside the target region.
- ``precision``: share of class-c samples within ``near_radius`` mode stds (Mahalanobis) of a
  class-c mode, averaged over classes.
- ``sw2``: sliced Wasserstein-2 distance between the class-c samples and as many fresh draws of
  the true class-c law, averaged over classes (reference draws and directions from ``metric_seed``).
- ``loglik``: mean log-density of each sample under its own true target class.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .exact import GaussianMixture
from .scenario import Scenario

METRICS = ("ood_rate", "precision", "sw2", "loglik")
LOWER_IS_BETTER = {"ood_rate": True, "precision": False, "sw2": True, "loglik": False}


def min_mahalanobis(mixture: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N,) Mahalanobis distance to the nearest component."""
    diff = x.to(torch.float64)[:, None, :] - mixture.means[None]          # (N, M, D)
    prec = torch.linalg.inv(mixture.covs)
    maha2 = torch.einsum("nmi,mij,nmj->nm", diff, prec, diff)
    return maha2.min(dim=1).values.clamp_min(0).sqrt()


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> float:
    """SW2 between equal-size point sets x, y (N, D) over unit ``directions`` (P, D)."""
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size sets, got {tuple(x.shape)} and {tuple(y.shape)}")
    px = np.sort((directions.to(torch.float64) @ x.to(torch.float64).T).numpy(), axis=1)  # (P, N)
    py = np.sort((directions.to(torch.float64) @ y.to(torch.float64).T).numpy(), axis=1)
    return float(np.sqrt(((px - py) ** 2).mean()))


def _metric_generator(seed: int, label: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1009 + label)


def sample_metrics(scenario: Scenario, x: torch.Tensor, labels: torch.Tensor, *, near_radius: float = 3.0,
                   sw_projections: int = 256, metric_seed: int = 12345) -> dict[str, float]:
    """All metrics of samples x (N, 2) generated for target labels (N,)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    labels = torch.as_tensor(labels)
    if not torch.isfinite(x).all():
        raise ValueError("samples contain NaN or inf")
    out = {"ood_rate": float(1.0 - scenario.in_region(x.numpy()).mean())}
    precision, sw, loglik_sum = [], [], 0.0
    for k, law in enumerate(scenario.target_classes):
        xk = x[labels == k]
        if len(xk) == 0:
            continue
        precision.append(float((min_mahalanobis(law, xk) <= near_radius).double().mean()))
        gen = _metric_generator(metric_seed, k)
        ref, _ = law.sample(len(xk), gen)
        directions = torch.randn(sw_projections, 2, dtype=torch.float64, generator=gen)
        directions = directions / directions.norm(dim=1, keepdim=True)
        sw.append(sliced_wasserstein(xk, ref, directions))
        loglik_sum += float(law.log_prob(xk).sum())
    out["precision"] = float(np.mean(precision))
    out["sw2"] = float(np.mean(sw))
    out["loglik"] = loglik_sum / len(x)
    return out


def summarize(per_seed: list[dict[str, float]]) -> dict[str, dict]:
    """Seed-wise metrics -> {metric: {"mean", "std" (ddof=1, 0 for one seed), "per_seed"}}."""
    out = {}
    for name in METRICS:
        vals = np.array([m[name] for m in per_seed], dtype=np.float64)
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out[name] = {"mean": float(vals.mean()), "std": std if math.isfinite(std) else 0.0,
                     "per_seed": vals.tolist()}
    return out
