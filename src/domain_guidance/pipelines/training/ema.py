"""Exponential moving average of the trained parameters, with an optional warm-up.

Only trained parameters are tracked (all of a full fine-tune; LoRA weights and the target label
table in LoRA mode), so a LoRA run's EMA is as small as its adapter.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch

from .config import EmaConfig


def ema_decay(step: int, cfg: EmaConfig) -> float:
    """Decay used for the update after optimizer step ``step`` (0-based).

    ``none``: ``decay``; ``linear``: ``min(decay, (1 + step) / (10 + step))`` (TF / Ho et al.);
    ``power``: ``min(decay, 1 - (1 + step / inv_gamma) ** -power)`` (k-diffusion's EMAWarmup).
    """
    if cfg.warmup == "none":
        return cfg.decay
    if cfg.warmup == "linear":
        return min(cfg.decay, (1 + step) / (10 + step))
    if cfg.warmup == "power":
        return max(0.0, min(cfg.decay, 1 - (1 + step / cfg.inv_gamma) ** -cfg.power))
    raise ValueError(f"unknown EMA warm-up {cfg.warmup!r}; expected none, linear or power")


class EMA:
    """Shadow copies (float32, same device) of named parameters: ``ema = d * ema + (1 - d) * param``."""

    def __init__(self, params: Mapping[str, torch.Tensor], cfg: EmaConfig):
        self.cfg = cfg
        self.shadow: dict[str, torch.Tensor] = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self, params: Mapping[str, torch.Tensor], step: int) -> float:
        """Fold the current ``params`` in after optimizer step ``step``; returns the decay used."""
        d = ema_decay(step, self.cfg)
        names = list(self.shadow)
        if set(names) != set(params):
            raise KeyError(f"EMA tracks {len(names)} tensors but got {len(params)}; names differ")
        shadow = [self.shadow[n] for n in names]
        current = [params[n].detach().float() for n in names]
        torch._foreach_mul_(shadow, d)
        torch._foreach_add_(shadow, current, alpha=1.0 - d)
        return d

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for n, t in state.items():
            self.shadow[n].copy_(t)

    @contextlib.contextmanager
    def applied(self, params: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Temporarily put the EMA weights into ``params`` (swapped in place, one tensor of scratch memory)."""
        @torch.no_grad()
        def swap() -> None:
            for n, p in params.items():
                tmp = p.detach().clone()
                p.copy_(self.shadow[n])
                self.shadow[n].copy_(tmp)

        swap()
        try:
            yield
        finally:
            swap()
