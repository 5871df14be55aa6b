"""Seeded sampling of 2-D points through the core samplers.

``core.seeds.PerSampleNoise`` draws one tensor per generator at every step, which for thousands
of 2-D points costs more than the denoiser. ``TrajectoryNoise`` draws each point's whole noise
trajectory (x_T and every step's fresh noise) from its own seeded generator in one call, then
hands it out step by step: still one stream per seed, so point i depends only on its seed.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ...core.sampling import respacing, sample
from ...core.diffusion import create_diffusion


class TrajectoryNoise:
    """Duck-type of ``PerSampleNoise`` for ``core.sampling.sample``: (N, steps + 1, D) pre-drawn."""

    def __init__(self, seeds: Sequence[int], dim: int, num_draws: int, dtype: torch.dtype = torch.float64):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.draws = torch.stack([torch.randn(num_draws, dim, generator=g) for g in gens]).to(dtype)  # (N, S, D)
        self.used = 0

    def _next(self) -> torch.Tensor:
        if self.used >= self.draws.shape[1]:
            raise RuntimeError(f"TrajectoryNoise exhausted after {self.used} draws")
        out = self.draws[:, self.used]
        self.used += 1
        return out

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """x_T for every point: (N, D)."""
        if tuple(shape) != tuple(self.draws.shape[2:]):
            raise ValueError(f"TrajectoryNoise holds points of shape {tuple(self.draws.shape[2:])}, asked {tuple(shape)}")
        return self._next()

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.draws[:, 0].shape:
            raise ValueError(f"batch of shape {tuple(x.shape)} but noise for {tuple(self.draws[:, 0].shape)}")
        return self._next().to(dtype=x.dtype)


def point_seeds(run_seed: int, n: int) -> list[int]:
    """Per-point seeds of one run: disjoint ranges for different run seeds."""
    return [run_seed * 1_000_003 + i for i in range(n)]


def sample_points(denoiser: Callable, labels: torch.Tensor, run_seed: int, *, sampler: str = "ddpm", steps: int = 100,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(N,) labels -> (N, 2) samples; point i uses seed ``point_seeds(run_seed, N)[i]``."""
    spec = respacing(sampler, steps)
    diffusion = create_diffusion(spec, learn_sigma=False)
    noise = TrajectoryNoise(point_seeds(run_seed, len(labels)), 2, diffusion.num_timesteps + 1, dtype)
    x_T = noise.randn((2,))
    return sample(denoiser, x_T, labels, sampler=sampler, diffusion=diffusion, step_noise=noise)  # type: ignore[arg-type]  # duck-typed PerSampleNoise
