"""Classifier-free guidance, Domain Guidance and autoguidance: one rule, three choices of guide branch.

    guided = uncond + w * (cond - uncond)

CFG takes ``uncond`` from the fine-tuned model at its own null label; DoG (Zhong et al., 2025)
takes it from the frozen pre-trained model at *its* null label; autoguidance (Karras et al., 2024)
takes it from a weaker version of the same model (an earlier checkpoint, a smaller model) at the
*same*, conditional label. The guide's label policy (``guide_label``: "null" or "cond") is the
only difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .denoiser import DenoiserLike, check_same_input_space, evaluate_pair

Method = Literal["unguided", "cfg", "dog", "autoguidance"]
METHODS: tuple[str, ...] = ("unguided", "cfg", "dog", "autoguidance")
GUIDE_LABELS: tuple[str, ...] = ("null", "cond")  # the guide sees its own null label, or the conditional one


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
    ``guide_label``: "null" calls the guide at its own null label (CFG, DoG), "cond" at the
    conditional labels (autoguidance: the guide must share the label space).
    """

    cond: DenoiserLike
    uncond: DenoiserLike | None = None
    scale: float = 1.0
    channels: int | None = None
    interval: tuple[float, float] | None = None
    guide_label: str = "null"

    def __post_init__(self) -> None:
        self.scale = check_scale(self.scale)
        if self.guide_label not in GUIDE_LABELS:
            raise ValueError(f"guide_label must be one of {GUIDE_LABELS}, got {self.guide_label!r}")
        if self.uncond is not None:
            check_same_input_space(self.cond, self.uncond)
            if self.guide_label == "cond":
                _check_same_labels(self.cond, self.uncond)
            elif self.uncond.null_label is None:
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
        if self.guide_label == "cond":  # autoguidance: the guide at the same labels (two calls, never batched)
            cond_out, uncond_out = self.cond(x, t, labels), self.uncond(x, t, labels)
            return self._combine(cond_out, uncond_out, active, x)
        null = torch.full_like(labels, self.uncond.null_label)
        # one batched call of 2N where one network serves both (CFG; LoRA-DoG with per-sample adapter), else two
        cond_out, uncond_out = evaluate_pair(self.cond, self.uncond, x, t, labels, null)
        return self._combine(cond_out, uncond_out, active, x)

    def _combine(self, cond_out: torch.Tensor, uncond_out: torch.Tensor, active: torch.Tensor,
                 x: torch.Tensor) -> torch.Tensor:
        """The guidance rule where ``active`` (N,), the conditional prediction elsewhere."""
        guided = apply_guidance(cond_out, uncond_out, self.scale, self.cond.data_channels, self.channels)
        if active.all():
            return guided
        return torch.where(active.reshape(-1, *([1] * (x.ndim - 1))), guided, cond_out)


def build_guided_denoiser(method: str, finetuned: DenoiserLike, guide: DenoiserLike | None = None, scale: float = 1.5,
                          channels: int | None = None,
                          interval: tuple[float, float] | None = None) -> GuidedDenoiser:
    """Guided denoiser for ``method`` in {"unguided", "cfg", "dog", "autoguidance"}.

    CFG needs a fine-tuned model with a null label; DoG needs the pre-trained ``guide``
    (a separate model, or the same adapted network with ``adapter=False``); autoguidance needs a
    weaker ``guide`` of the same classes (e.g. an earlier checkpoint), called at the same labels.
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
    if method == "autoguidance":
        if guide is None:
            raise ValueError("autoguidance needs a guide: a weaker model of the same classes (an earlier checkpoint "
                             "of this fine-tune, or a smaller model)")
        return GuidedDenoiser(finetuned, guide, scale, channels, interval, guide_label="cond")
    raise ValueError(f"unknown guidance method {method!r}; expected one of {METHODS}")


def _check_same_labels(cond: DenoiserLike, guide: DenoiserLike) -> None:
    """Autoguidance calls the guide at the conditional labels: both must have the same classes."""
    a = getattr(getattr(cond, "config", None), "num_classes", None)
    b = getattr(getattr(guide, "config", None), "num_classes", None)
    if a is not None and b is not None and a != b:
        raise ValueError(f"autoguidance calls the guide at the conditional labels, so it needs the model's classes: "
                         f"the model has {a} classes, the guide {b}; use an earlier checkpoint or a smaller model "
                         "trained on the same classes (DoG is the method for a pre-trained guide of other classes)")
