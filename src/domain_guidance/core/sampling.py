"""Sampler loops, all with one signature:

    sample(denoiser, noise, labels, steps=..., step_noise=..., ...) -> x0

``denoiser`` is any ``(x, t, labels) -> prediction`` callable (a Denoiser or GuidedDenoiser),
called at ORIGINAL diffusion timesteps. ``noise`` is x_T; ``step_noise`` supplies the fresh
noise of ancestral steps (per-sample generators make sample i depend only on its seed).
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, create_diffusion
from .seeds import PerSampleNoise

DenoiserFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("ddpm", "ddim")


def default_steps(sampler: str, steps: int | str) -> str:
    """Respacing spec for a sampler: DDIM uses ADM's evenly strided "ddimN" steps."""
    steps = str(steps)
    if sampler == "ddim" and steps.isdigit():
        return f"ddim{steps}"
    return steps


@torch.no_grad()
def sample(denoiser: DenoiserFn, noise: torch.Tensor, labels: torch.Tensor, *, sampler: str = "ddpm",
           steps: int | str = 250, learn_sigma: bool = True, eta: float = 0.0, clip_denoised: bool = False,
           step_noise: PerSampleNoise | None = None, diffusion: GaussianDiffusion | None = None,
           progress: bool = False) -> torch.Tensor:
    """Run the reverse chain from ``noise`` (N, C, H, W) for ``labels`` (N,); returns x0.

    sampler "ddpm": ancestral steps with the model's learned variance (or fixed variance);
    "ddim": DDIM with ``eta``. ``steps`` is a respacing spec ("250", "50", "ddim50", ...).
    Without ``step_noise`` the global torch RNG is used (not batch-size invariant).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    if labels.shape != (noise.shape[0],):
        raise ValueError(f"labels must have shape ({noise.shape[0]},), got {tuple(labels.shape)}")
    if diffusion is None:
        diffusion = create_diffusion(default_steps(sampler, steps), learn_sigma=learn_sigma)
    timestep_map = diffusion.timestep_map.to(noise.device)
    x = noise
    indices = list(range(diffusion.num_timesteps))[::-1]
    for i in tqdm(indices, disable=not progress, desc=f"{sampler} sampling", leave=False):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        out = denoiser(x, timestep_map[t], labels)  # the network always sees the original step
        fresh = step_noise.randn_like(x) if step_noise is not None else torch.randn_like(x)
        if sampler == "ddpm":
            x = diffusion.ddpm_step(out, x, t, fresh, clip_denoised)["sample"]
        else:
            x = diffusion.ddim_step(out, x, t, fresh, eta, clip_denoised)["sample"]
    return x


def sample_from_seeds(denoiser: DenoiserFn, seeds: list[int], labels: torch.Tensor, shape: tuple[int, ...],
                      device: torch.device | str = "cpu", **kwargs) -> torch.Tensor:
    """Sample with per-sample seeds: x_T and every step's noise come from seed i's own stream."""
    noise_source = PerSampleNoise(seeds, device)
    noise = noise_source.randn(shape)  # (N, C, H, W)
    return sample(denoiser, noise, labels.to(device), step_noise=noise_source, **kwargs)
