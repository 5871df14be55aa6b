"""Shared helpers of the checkpoint tests (tiny DiTs, inputs, exact comparisons)."""
from __future__ import annotations

import torch
from torch import nn

from domain_guidance.core.models import DiTConfig


def inputs(cfg: DiTConfig, n: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, t, y) for ``cfg``; the labels include the model's own null label."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, *cfg.grid_hw_pixels, generator=g)
    t = torch.tensor([0, 17, 999, 500][:n])
    y = torch.tensor([0, cfg.num_classes - 1, cfg.null_label if cfg.null_class else 1, 2][:n])
    return x, t, y


def assert_same_weights(a: nn.Module | dict, b: nn.Module | dict) -> None:
    sa = a.state_dict() if isinstance(a, nn.Module) else a
    sb = b.state_dict() if isinstance(b, nn.Module) else b
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
