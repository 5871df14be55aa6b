"""The flow-matching training loss (SiT's velocity loss, no weighting)."""
from __future__ import annotations

import torch

from ..diffusion.losses import mean_flat
from .path import interpolate, velocity_target


def flow_matching_losses(out: torch.Tensor, data: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample losses of a velocity network's output ``out`` (N, K, ...) for data and noise (N, C, ...).

    The first C channels of ``out`` are the velocity; further ones (the learned-sigma half of a DiT
    layout, which SiT drops) get no loss. Returns {"loss": (N,), "mse": (N,)} (equal: no extra terms).
    """
    c = data.shape[1]
    if out.shape[0] != data.shape[0] or out.shape[1] < c or out.shape[2:] != data.shape[2:]:
        raise ValueError(f"network output {tuple(out.shape)} does not fit data {tuple(data.shape)}: expected "
                         f"(N, >= {c}, {', '.join(map(str, data.shape[2:]))})")
    mse = mean_flat((out[:, :c] - velocity_target(data, noise)) ** 2)
    return {"loss": mse, "mse": mse}


def flow_training_inputs(data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for training at times t (N,) drawn uniformly in [0, 1] (SiT's train_eps is 0 for velocity)."""
    if t.shape != (data.shape[0],):
        raise ValueError(f"t must have shape ({data.shape[0]},), got {tuple(t.shape)}")
    return interpolate(data, noise, t)
