"""A guidance interval given in noise levels sigma, as network times of each schedule.

Kynkäänniemi et al. (2024, "Applying guidance in a limited interval improves sample and
distribution quality") guide only where the EDM noise level sigma lies in (sigma_lo, sigma_hi];
guidance at high noise was found harmful and at low noise useless. EDM2's recommended interval is
RECOMMENDED_SIGMA = (0.28, 5.42]. A network time is turned into sigma by its schedule:

- DiT / ADM (linear betas 1e-4 .. 0.02, 1000 steps): sigma_t = sqrt((1 - alphabar_t) / alphabar_t);
  (0.28, 5.42] is t in [82, 578] (t = 500 is sigma 3.4, t = 999 sigma 157).
- SiT's linear path x_t = t x_data + (1 - t) noise (t = 0 noise): sigma = (1 - t) / t, so
  (lo, hi] is t in [1 / (1 + hi), 1 / (1 + lo)).
"""
from __future__ import annotations

import math

import numpy as np

from .diffusion.gaussian import linear_betas

RECOMMENDED_SIGMA = (0.28, 5.42)  # EDM2's guidance interval (Kynkäänniemi et al. 2024)
DDPM_TIME_RANGE = (0, 999)
FLOW_TIME_RANGE = (0.0, 1.0)


def ddpm_sigmas(num_timesteps: int = 1000) -> np.ndarray:
    """(T,) sigma of every DDPM timestep of the linear schedule: sqrt((1 - alphabar) / alphabar)."""
    alpha_bar = np.cumprod(1.0 - linear_betas(num_timesteps))
    return np.sqrt((1.0 - alpha_bar) / alpha_bar)


def _check(lo: float, hi: float) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 <= lo < hi:
        raise ValueError(f"interval in sigma: expected finite 0 <= LO < HI, got ({lo:g}, {hi:g})")
    return lo, hi


def ddpm_interval(lo: float, hi: float, num_timesteps: int = 1000) -> tuple[float, float]:
    """The timesteps (t_lo, t_hi), inclusive, whose sigma lies in (lo, hi] on the DiT schedule."""
    lo, hi = _check(lo, hi)
    sigma = ddpm_sigmas(num_timesteps)
    inside = np.nonzero((sigma > lo) & (sigma <= hi))[0]
    if inside.size == 0:
        raise ValueError(f"interval in sigma ({lo:g}, {hi:g}]: no DDPM timestep has a sigma there (the schedule "
                         f"spans {sigma[0]:.3g} .. {sigma[-1]:.3g})")
    return float(inside[0]), float(inside[-1])


def flow_interval(lo: float, hi: float) -> tuple[float, float]:
    """SiT times (t_lo, t_hi), inclusive, with sigma = (1 - t) / t in (lo, hi] (t = 0 is noise)."""
    lo, hi = _check(lo, hi)
    t_hi = 1.0 if lo == 0 else math.nextafter(1.0 / (1.0 + lo), 0.0)  # sigma = lo itself is left out
    return 1.0 / (1.0 + hi), t_hi


def sigma_interval(lo: float, hi: float, time_range: tuple[float, float]) -> tuple[float, float]:
    """(lo, hi] in sigma as an interval of network times of a sampler with ``time_range``: DDPM steps
    0..999 (DiT schedule) or SiT time 0..1 (linear path)."""
    if tuple(time_range) == DDPM_TIME_RANGE:
        return ddpm_interval(lo, hi)
    if tuple(time_range) == FLOW_TIME_RANGE:
        return flow_interval(lo, hi)
    raise ValueError(f"interval in sigma: no noise schedule known for network times {time_range}; expected DDPM "
                     f"steps {DDPM_TIME_RANGE} or SiT time {FLOW_TIME_RANGE}")
