"""The scenario of the 2-D study: exact source and target mixtures, target region, real samples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import PRESETS, TRACKS, ToyConfig, preset_config
from .exact import GaussianMixture

__all__ = ["PRESETS", "TRACKS", "Scenario", "ToyConfig", "build_scenario", "preset_config"]


@dataclass
class Scenario:
    """The densities of the study (exact mixtures) and the few real target samples."""

    source_classes: list[GaussianMixture]      # one per source class
    source: GaussianMixture                    # pre-training marginal
    target_classes: list[GaussianMixture]      # one per target class
    target: GaussianMixture                    # target marginal
    region_center: np.ndarray                  # (2,)
    region_radius: float
    real_x: torch.Tensor                       # (K * real_per_class, 2) float64
    real_y: torch.Tensor                       # (K * real_per_class,) long

    @property
    def num_source_classes(self) -> int:
        return len(self.source_classes)

    @property
    def num_target_classes(self) -> int:
        return len(self.target_classes)

    def in_region(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 2) -> (N,) bool: inside the target disk."""
        x = np.asarray(x, dtype=np.float64)
        return np.linalg.norm(x - self.region_center, axis=1) <= self.region_radius


def build_scenario(config: ToyConfig) -> Scenario:
    """The exact densities and the real target samples (drawn with ``config.data_seed``)."""
    g = config.source_grid
    coords = (np.arange(g) - (g - 1) / 2) * config.source_spacing
    grid = np.stack(np.meshgrid(coords, coords, indexing="xy"), -1).reshape(-1, 2)  # (g*g, 2)
    source_classes = [GaussianMixture.isotropic(grid[i:i + 1], config.source_std) for i in range(len(grid))]
    source = GaussianMixture.concat(source_classes)

    means = np.asarray(config.target_means, dtype=np.float64)
    cls = np.asarray(config.target_classes)
    target_classes = [GaussianMixture.isotropic(means[cls == k], config.target_std)
                      for k in range(config.num_target_classes)]
    target = GaussianMixture.concat(target_classes)

    gen = torch.Generator().manual_seed(config.data_seed)
    real = [tc.sample(config.real_per_class, gen)[0] for tc in target_classes]
    real_x = torch.cat(real)
    real_y = torch.arange(len(real)).repeat_interleave(config.real_per_class)
    return Scenario(source_classes, source, target_classes, target,
                    np.asarray(config.region_center, dtype=np.float64), float(config.region_radius), real_x, real_y)
