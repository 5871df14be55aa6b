"""Classifier-free guidance and Domain Guidance: one rule, two choices of unconditional branch.

    guided = uncond + w * (cond - uncond)

CFG takes ``uncond`` from the fine-tuned model at its own null label; DoG (Zhong et al., 2025)
takes it from the frozen pre-trained model at *its* null label.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .denoiser import DenoiserLike, check_same_input_space, evaluate_pair

Method = Literal["unguided", "cfg", "dog"]
METHODS: tuple[str, ...] = ("unguided", "cfg", "dog")


def apply_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float, data_channels: int,
                   channels: int | None = None) -> torch.Tensor:
    """The guidance rule, the only place it is written.

    cond, uncond: (N, K, H, W) predictions whose first ``data_channels`` channels are the
    guided quantity (eps or velocity) and any further ones the learned variance. The first
    ``channels`` (default: all ``data_channels``) are guided; the remaining channels, including
    the variance, come from ``cond``. ``channels=3`` with 4-channel latents reproduces the
    authors' release (DiT issue 41).
    """
    n = data_channels if channels is None else channels
    if not 1 <= n <= data_channels:
        raise ValueError(f"channels must be in 1..{data_channels}, got {channels}")
    guided = uncond[:, :n] + scale * (cond[:, :n] - uncond[:, :n])
    return torch.cat([guided, cond[:, n:]], dim=1)


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"guidance scale must be a finite number, got {scale}")
    return scale


@dataclass
class GuidedDenoiser:
    """``(x, t, labels) -> prediction`` combining a conditional and an unconditional Denoiser.

    ``interval=(lo, hi)`` guides only where lo <= t <= hi (network time units); outside it a
    single conditional evaluation is made. ``uncond=None`` or ``scale == 1`` is unguided.
    """

    cond: DenoiserLike
    uncond: DenoiserLike | None = None
    scale: float = 1.0
    channels: int | None = None
    interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.scale = check_scale(self.scale)
        if self.uncond is not None:
            check_same_input_space(self.cond, self.uncond)
            if self.uncond.null_label is None:
                raise ValueError("the unconditional branch's model has no null label (trained without label dropout)")
        if self.interval is not None and self.interval[0] > self.interval[1]:
            raise ValueError(f"guidance interval {self.interval} has lo > hi")

    @property
    def prediction(self) -> str:
        return self.cond.prediction

    @property
    def learn_sigma(self) -> bool:
        return self.cond.learn_sigma

    @property
    def null_label(self) -> int | None:
        return self.cond.null_label

    def _active(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) bool: where guidance applies."""
        if self.interval is None:
            return torch.ones_like(t, dtype=torch.bool)
        lo, hi = self.interval
        return (t >= lo) & (t <= hi)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.uncond is None or self.scale == 1.0:
            return self.cond(x, t, labels)
        active = self._active(t)
        if not active.any():
            return self.cond(x, t, labels)
        null = torch.full_like(labels, self.uncond.null_label)
        # one batched call of 2N where one network serves both (CFG; LoRA-DoG with per-sample adapter), else two
        cond_out, uncond_out = evaluate_pair(self.cond, self.uncond, x, t, labels, null)
        guided = apply_guidance(cond_out, uncond_out, self.scale, self.cond.data_channels, self.channels)
        if active.all():
            return guided
        return torch.where(active.reshape(-1, *([1] * (x.ndim - 1))), guided, cond_out)


def build_guided_denoiser(method: str, finetuned: DenoiserLike, guide: DenoiserLike | None = None, scale: float = 1.5,
                          channels: int | None = None,
                          interval: tuple[float, float] | None = None) -> GuidedDenoiser:
    """Guided denoiser for ``method`` in {"unguided", "cfg", "dog"}.

    CFG needs a fine-tuned model with a null label; DoG needs the pre-trained ``guide``
    (a separate model, or the same adapted network with ``adapter=False``).
    """
    if method == "unguided":
        return GuidedDenoiser(finetuned)
    if method == "cfg":
        if finetuned.null_label is None:
            raise ValueError("CFG needs a fine-tuned model with a null label (label dropout > 0); "
                             "this one has none: sample it unguided or with DoG")
        return GuidedDenoiser(finetuned, finetuned, scale, channels, interval)
    if method == "dog":
        if guide is None:
            raise ValueError("DoG needs the pre-trained model as guide")
        return GuidedDenoiser(finetuned, guide, scale, channels, interval)
    raise ValueError(f"unknown guidance method {method!r}; expected one of {METHODS}")
