"""Samplers as a registry of functions with one signature (k-diffusion style):

    SAMPLERS[name].fn(denoiser, noise, labels, *, steps, step_noise=None, callback=None, **options) -> x0

``denoiser`` is any ``(x, t, labels) -> prediction`` callable (a Denoiser or GuidedDenoiser) that
also says what it predicts (``prediction``, ``learn_sigma``); it is called at ORIGINAL diffusion
timesteps. ``noise`` is x_T; ``step_noise`` supplies the fresh noise of stochastic steps
(per-sample generators make sample i depend only on its seed). A sampler refuses a prediction
type it does not integrate. A new sampler is one decorated function (``sampler_registry.register_sampler``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, create_diffusion
from .diffusion.respace import space_timesteps
from .flow import samplers as _flow_samplers  # noqa: F401  registers ode-euler, ode-heun, ode-dopri5, sde-euler
from . import diffusers_samplers as _diffusers_samplers  # noqa: F401  registers dpm-solver++, unipc, deis, euler, heun
from .sampler_registry import (SAMPLERS, PredictingDenoiser, SamplerSpec, StepCallback, check_prediction,
                               get_sampler, register_sampler)
from .seeds import PerSampleNoise

__all__ = ["SAMPLERS", "NUM_TIMESTEPS", "PredictingDenoiser", "SamplerSpec", "StepCallback", "check_prediction",
           "get_sampler", "register_sampler", "respacing", "sample", "sample_from_seeds"]

DenoiserFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
NUM_TIMESTEPS = 1000  # DiT / ADM training chain


# ---- ADM (DDPM / DDIM) -------------------------------------------------------------------------

def respacing(sampler: str, steps: int | str) -> str:
    """Respacing spec for an ADM sampler: DDIM uses ADM's evenly strided "ddimN" steps."""
    steps = str(steps).strip()
    if sampler == "ddim" and steps.isdigit():
        return f"ddim{steps}"
    return steps


def _adm_timesteps(sampler: str) -> Callable[..., list[int]]:
    def timesteps(steps: str | int, **options: Any) -> list[int]:
        kept = sorted(space_timesteps(NUM_TIMESTEPS, respacing(sampler, steps)), reverse=True)
        if len(kept) < 2:
            raise ValueError(f"steps {steps!r} gives {len(kept)} sampling step; {sampler} needs at least 2")
        return kept
    return timesteps


def _adm_loop(step: Callable[..., dict[str, torch.Tensor]], name: str, denoiser: PredictingDenoiser,
              noise: torch.Tensor, labels: torch.Tensor, diffusion: GaussianDiffusion,
              step_noise: PerSampleNoise | None, callback: StepCallback | None, progress: bool) -> torch.Tensor:
    """The reverse chain shared by DDPM and DDIM; ``step(out, x, t, fresh)`` advances one spaced step."""
    timestep_map = diffusion.timestep_map.to(noise.device)
    x = noise  # (N, C, H, W)
    indices = list(range(diffusion.num_timesteps))[::-1]
    for i in tqdm(indices, disable=not progress, desc=f"{name} sampling", leave=False):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        out = denoiser(x, timestep_map[t], labels)  # the network always sees the original step
        fresh = step_noise.randn_like(x) if step_noise is not None else torch.randn_like(x)
        result = step(out, x, t, fresh)
        if callback is not None:
            callback({"i": len(indices) - 1 - i, "t": timestep_map[t], "x": x, "denoised": result["pred_xstart"],
                      "x_next": result["sample"]})
        x = result["sample"]
    return x


def _diffusion_for(denoiser: PredictingDenoiser, sampler: str, steps: int | str,
                   diffusion: GaussianDiffusion | None) -> GaussianDiffusion:
    if diffusion is not None:
        return diffusion
    _adm_timesteps(sampler)(steps)  # validates the spec (>= 2 steps)
    return create_diffusion(respacing(sampler, steps), learn_sigma=denoiser.learn_sigma)


@register_sampler("ddpm", predictions=("eps",), timesteps=_adm_timesteps("ddpm"), time_range=(0, NUM_TIMESTEPS - 1),
                  help="ancestral DDPM (ADM) with the model's learned variance")
def ddpm(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 250,
         step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, clip_denoised: bool = False,
         diffusion: GaussianDiffusion | None = None, progress: bool = False) -> torch.Tensor:
    """Ancestral sampling over the respaced chain ``steps`` ("250", "50", "10,10,5")."""
    diffusion = _diffusion_for(denoiser, "ddpm", steps, diffusion)
    step = lambda out, x, t, fresh: diffusion.ddpm_step(out, x, t, fresh, clip_denoised)  # noqa: E731
    return _adm_loop(step, "ddpm", denoiser, noise, labels, diffusion, step_noise, callback, progress)


@register_sampler("ddim", predictions=("eps",), timesteps=_adm_timesteps("ddim"), time_range=(0, NUM_TIMESTEPS - 1),
                  help="DDIM (eta 0: deterministic) over evenly strided steps")
def ddim(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 50,
         step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, eta: float = 0.0,
         clip_denoised: bool = False, diffusion: GaussianDiffusion | None = None,
         progress: bool = False) -> torch.Tensor:
    """DDIM over ``steps`` evenly strided steps (a plain number N means "ddimN")."""
    diffusion = _diffusion_for(denoiser, "ddim", steps, diffusion)
    step = lambda out, x, t, fresh: diffusion.ddim_step(out, x, t, fresh, eta, clip_denoised)  # noqa: E731
    return _adm_loop(step, "ddim", denoiser, noise, labels, diffusion, step_noise, callback, progress)


# ---- entry points ------------------------------------------------------------------------------

@torch.no_grad()
def sample(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, sampler: str = "ddpm",
           steps: int | str = 250, step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None,
           **options: Any) -> torch.Tensor:
    """Run ``sampler`` from ``noise`` (N, ...) for ``labels`` (N,); returns x0.

    ``options`` go to the sampler (``eta``, ``clip_denoised``, ``diffusion``, ``progress``).
    Without ``step_noise`` the global torch RNG is used (not batch-size invariant).
    """
    spec = get_sampler(sampler)
    check_prediction(spec, denoiser)
    if labels.shape != (noise.shape[0],):
        raise ValueError(f"labels must have shape ({noise.shape[0]},), got {tuple(labels.shape)}")
    return spec.fn(denoiser, noise, labels, steps=steps, step_noise=step_noise, callback=callback, **options)


def sample_from_seeds(denoiser: PredictingDenoiser, seeds: list[int], labels: torch.Tensor, shape: tuple[int, ...],
                      device: torch.device | str = "cpu", **kwargs: Any) -> torch.Tensor:
    """Sample with per-sample seeds: x_T and every step's noise come from seed i's own stream."""
    noise_source = PerSampleNoise(seeds, device)
    noise = noise_source.randn(shape)  # (N, *shape)
    return sample(denoiser, noise, labels.to(device), step_noise=noise_source, **kwargs)

