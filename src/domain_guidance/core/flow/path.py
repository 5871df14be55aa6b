"""SiT's linear transport path (flow matching), in SiT's time convention.

    x_t = t * data + (1 - t) * noise,   t in [0, 1]:  t = 0 is pure noise, t = 1 is data

(the opposite direction to DiT's diffusion step index, where t = 999 is noise). The network
predicts the velocity ``v(x_t, t) = E[data - noise | x_t]``; the ODE ``dx/dt = v`` carries
N(0, I) at t = 0 to the data at t = 1. With ``alpha_t = t`` and ``sigma_t = 1 - t`` the other
parameterisations follow in closed form (all elementwise; ``t`` broadcasts as (N, 1, ..., 1)):

    eps   = x - t * v                    data estimate  x0_hat = x + (1 - t) * v
    score = -eps / (1 - t) = (t * v - x) / (1 - t)

Written from the SiT paper (Ma et al., 2024) and its public code (willisma/SiT ``transport``).
"""
from __future__ import annotations

import math

import torch

DIFFUSION_FORMS: tuple[str, ...] = ("constant", "SBDM", "sigma", "linear", "decreasing", "increasing-decreasing")


def expand_t(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """(N,) or scalar times -> (N, 1, ..., 1) broadcastable against x (N, ...), in x's dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def interpolate(data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * data + (1 - t) * noise; data, noise: (N, ...), t: (N,)."""
    tt = expand_t(t, data)
    return tt * data + (1 - tt) * noise


def velocity_target(data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_t / dt along the straight line: data - noise (the flow-matching regression target)."""
    return data - noise


def velocity_to_eps(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise estimate eps = x - t v."""
    return x - expand_t(t, x) * v


def velocity_to_data(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Data estimate E[data | x_t] = x + (1 - t) v."""
    return x + (1 - expand_t(t, x)) * v


def velocity_to_score(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Score grad log p_t(x) = (t v - x) / (1 - t); undefined at t = 1."""
    tt = expand_t(t, x)
    return (tt * v - x) / (1 - tt)


def eps_to_velocity(eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Velocity from a noise prediction: (x - eps) / t; undefined at t = 0."""
    return (x - eps) / expand_t(t, x)


def score_to_velocity(score: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Velocity from a score: (x + (1 - t) score) / t; undefined at t = 0."""
    tt = expand_t(t, x)
    return (x + (1 - tt) * score) / tt


def diffusion_coefficient(t: torch.Tensor, x: torch.Tensor, form: str = "sigma", norm: float = 1.0) -> torch.Tensor:
    """SiT's w(t) of the sampling SDE  dx = [v + w(t) score] dt + sqrt(2 w(t)) dW  (forward in t).

    Any w >= 0 keeps the marginals of the path; the forms are SiT's ``--diffusion-form`` choices:
    constant ``norm``; SBDM ``norm (1 - t) / t`` (the score-based diffusion model's own noise, infinite
    at t = 0); sigma and linear ``norm (1 - t)``; decreasing ``(norm cos(pi t) + 1)^2 / 4``;
    increasing-decreasing ``norm sin(pi t)^2``. Returns (N, 1, ..., 1).
    """
    tt = expand_t(t, x)
    if form == "constant":
        return torch.full_like(tt, norm)
    if form == "SBDM":
        return norm * (1 - tt) / tt
    if form in ("sigma", "linear"):
        return norm * (1 - tt)
    if form == "decreasing":
        return 0.25 * (norm * torch.cos(math.pi * tt) + 1) ** 2
    if form == "increasing-decreasing":
        return norm * torch.sin(math.pi * tt) ** 2
    raise ValueError(f"diffusion_form: unknown {form!r}; expected one of {list(DIFFUSION_FORMS)}")


def sde_drift(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Drift of the sampling SDE: v + w(t) * score(v, x, t); ``w`` from ``diffusion_coefficient``."""
    return v + w * velocity_to_score(v, x, t)
