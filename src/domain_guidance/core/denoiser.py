"""Denoiser: one network plus what is needed to use it (config, null label, adapter state)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from .models.adapters import adapter_disabled, adapter_per_sample
from .precision import check_precision, precision_context
from .models.config import DiTConfig


@dataclass
class Denoiser:
    """Callable ``(x, t, labels) -> prediction`` for one network.

    ``t`` is in the network's own time units (original diffusion step for DiT). ``config``
    describes the model *as this denoiser uses it*: for a LoRA guide that is the pre-trained
    config (its label count and null label), for the fine-tuned branch the target config.
    ``adapter=False`` runs a peft-adapted network with its adapters switched off.
    ``precision`` (fp32, tf32, bf16, fp16) is the network's arithmetic; the output is float32
    (float64 for a float64 network: an exact reference for rounding checks).
    ``fuse=False`` keeps this branch out of one-call batches with another branch of the same
    network (the two-call path, for comparisons). ``evaluations`` counts per-sample network
    evaluations made through this denoiser.
    """

    net: nn.Module
    config: DiTConfig
    adapter: bool = True
    precision: str = "fp32"
    fuse: bool = True
    evaluations: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self.net.eval()  # eval(): label dropout would otherwise fire
        check_precision(self.precision)

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
        self.evaluations += x.shape[0]
        ctx = contextlib.nullcontext() if self.adapter else adapter_disabled(self.net)
        with ctx, precision_context(self.precision, x.device):
            out = self.net(x, t, labels)
        return at_least_float32(out)  # the diffusion arithmetic stays float32 whatever the network ran in

    def shares_call_with(self, other: "Denoiser") -> bool:
        """True when one batched call can evaluate both: the same net at the same precision (same adapter
        state, or a peft network whose adapter is on for one and off for the other)."""
        return (isinstance(other, Denoiser) and self.fuse and other.fuse and self.net is other.net
                and self.precision == other.precision)

    def same_network(self, other: "Denoiser") -> bool:
        """True when both evaluate the identical function (same net, same adapter state)."""
        return self.net is other.net and self.adapter == other.adapter


def at_least_float32(out: torch.Tensor) -> torch.Tensor:
    """``out`` as float32, or as it is when already wider (a float64 network's exact reference)."""
    return out if out.dtype == torch.float64 else out.float()


def evaluate_pair(a: "DenoiserLike", b: "DenoiserLike", x: torch.Tensor, t: torch.Tensor, labels_a: torch.Tensor,
                  labels_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a(x, t, labels_a), b(x, t, labels_b)), in one network call of 2N when both use one network.

    CFG (one network, same adapter state) concatenates the two halves, like DiT's forward_with_cfg.
    A LoRA fine-tune and its guide (the same network, adapter on / off) run as one batch with
    per-sample adapter selection: LoRA and the label table of sample i follow whether it belongs
    to ``a`` or ``b``. Otherwise (two networks, or ``fuse=False``) two calls.
    """
    if isinstance(a, Denoiser) and a.shares_call_with(b):
        assert isinstance(b, Denoiser)
        a.check_labels(labels_a)
        b.check_labels(labels_b)
        xx, tt, yy = torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels_a, labels_b])  # (2N, ...)
        if a.adapter == b.adapter:
            out = a(xx, tt, yy)
            a.evaluations -= x.shape[0]
            b.evaluations += x.shape[0]
            return out.chunk(2)
        n = x.shape[0]
        on = torch.tensor([a.adapter] * n + [b.adapter] * n, device=x.device)  # (2N,) adapter on per sample
        with adapter_per_sample(a.net, on) as kwargs, precision_context(a.precision, x.device):
            out = at_least_float32(a.net(xx, tt, yy, **kwargs))
        a.evaluations += n
        b.evaluations += n
        return out.chunk(2)
    return a(x, t, labels_a), b(x, t, labels_b)


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
