"""Denoiser: one network plus what is needed to use it (config, null label, adapter state)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .models.adapters import adapter_disabled
from .models.config import DiTConfig


@dataclass
class Denoiser:
    """Callable ``(x, t, labels) -> prediction`` for one network.

    ``t`` is in the network's own time units (original diffusion step for DiT). ``config``
    describes the model *as this denoiser uses it*: for a LoRA guide that is the pre-trained
    config (its label count and null label), for the fine-tuned branch the target config.
    ``adapter=False`` runs a peft-adapted network with its adapters switched off.
    """

    net: nn.Module
    config: DiTConfig
    adapter: bool = True

    def __post_init__(self) -> None:
        self.net.eval()  # eval(): label dropout would otherwise fire

    @property
    def null_label(self) -> int | None:
        return self.config.null_label

    @property
    def prediction(self) -> str:
        """What the network predicts: "eps" (DiT) or "velocity" (SiT)."""
        return self.config.prediction

    @property
    def learn_sigma(self) -> bool:
        """True when the output carries variance channels after the prediction."""
        return self.config.learn_sigma

    @property
    def data_channels(self) -> int:
        """Channels of the guided quantity (eps/velocity); further output channels are variance."""
        return self.config.in_channels

    def input_space(self) -> dict:
        return self.config.input_space()

    def check_labels(self, labels: torch.Tensor) -> None:
        allowed_null = self.config.null_label
        bad = (labels < 0) | (labels >= self.config.num_classes)
        if allowed_null is not None:
            bad &= labels != allowed_null
        if bad.any():
            value = int(labels[bad][0])
            null_txt = f" or the null label {allowed_null}" if allowed_null is not None else ""
            raise ValueError(f"label {value} out of range: expected 0..{self.config.num_classes - 1}{null_txt}")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W), t: (N,), labels: (N,) -> (N, out_channels, H, W)."""
        self.check_labels(labels)
        ctx = contextlib.nullcontext() if self.adapter else adapter_disabled(self.net)
        with ctx:
            return self.net(x, t, labels)

    def same_network(self, other: "Denoiser") -> bool:
        """True when both evaluate the identical function (same net, same adapter state)."""
        return self.net is other.net and self.adapter == other.adapter


class DenoiserLike(Protocol):
    """What guidance needs of a denoiser (Denoiser, or e.g. the 2-D study's closed-form scores)."""

    null_label: int | None
    data_channels: int
    prediction: str
    learn_sigma: bool

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...
    def input_space(self) -> dict: ...
    def same_network(self, other: "DenoiserLike") -> bool: ...


def check_same_input_space(ft: "DenoiserLike", guide: "DenoiserLike") -> None:
    """Refuse a guide that does not share the fine-tuned model's input space, naming what differs."""
    a, b = ft.input_space(), guide.input_space()
    diffs = [f"{k}: fine-tuned {a[k]!r} vs guide {b[k]!r}" for k in a if a[k] != b[k]]
    if diffs:
        hint = ""
        if a["prediction"] != b["prediction"]:
            kinds = {"eps": "a diffusion (DiT, eps)", "velocity": "a flow-matching (SiT, velocity)"}
            hint = (f": {kinds.get(a['prediction'], repr(a['prediction']))} model cannot be guided by "
                    f"{kinds.get(b['prediction'], repr(b['prediction']))} model; guide it with a pre-trained model "
                    "of the same kind")
        raise ValueError("the guide does not share the fine-tuned model's input space ("
                         + "; ".join(diffs) + ")" + hint)
