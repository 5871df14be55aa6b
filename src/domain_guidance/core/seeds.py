"""Per-sample random streams (EDM2 style): sample i's noise depends only on its own seed."""
from __future__ import annotations

from typing import Sequence

import torch


class PerSampleNoise:
    """One ``torch.Generator`` per sample; ``randn(shape)`` stacks one draw per generator.

    The noise for seed 17 is therefore identical whatever the batch size, the position in the
    batch, or the number of processes (the image too, up to the float rounding of the network's
    batch-size-dependent kernels). Generators live on the CPU so results do not depend on
    the device either; draws are moved to ``device``.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """(len(seeds), *shape) standard normal draws."""
        draws = [torch.randn(tuple(shape), generator=g) for g in self.generators]
        return torch.stack(draws).to(self.device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.generators):
            raise ValueError(f"batch of {x.shape[0]} but {len(self.generators)} per-sample generators")
        return self.randn(x.shape[1:]).to(dtype=x.dtype)

    def randint(self, high: int) -> torch.Tensor:
        """(len(seeds),) integers in [0, high)."""
        return torch.stack([torch.randint(high, (), generator=g) for g in self.generators]).to(self.device)

    def rand(self) -> torch.Tensor:
        """(len(seeds),) uniforms in [0, 1)."""
        return torch.stack([torch.rand((), generator=g) for g in self.generators]).to(self.device)
