"""Single-pass Domain Guidance (DogFit, Bahram et al., AAAI 2026): guidance moved into the fine-tuning target.

    target = eps + (w - 1) * sg(eps_ema(x_t, c) - eps_pre(x_t, null_pre))

(velocities in place of eps for a flow-matching model), where ``eps_ema`` is the EMA of the model
being trained (at w = 1 when w is an input) and ``eps_pre`` the frozen pre-trained guide at its
own null label. The offset is the DoG offset the sampler's rule (``apply_guidance``) adds to the
conditional prediction (tested against the sampler), so a model that fits it samples like DoG with
one network evaluation per step (unguided sampling). Options, as DogFit: a late start (no offset up to ``start_step``),
a noise-range cut-off (offset only on the share ``cutoff`` of the noise range at the low-noise end,
or at the end DogFit's scripts use: ``cutoff_side``), and w as a model input (``w = 1 + z``,
``z ~ Exp(w_rate)``, or uniform in [w_min, w_max], drawn per sample from its own seed) so one model
serves every w. docs/protocols.md lists where we differ from DogFit's released code. Rows without an offset (before the start, past the cut-off, label dropped) see
w = 1 and the plain target.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch
from torch import nn

from ...core.diffusion.gaussian import GaussianDiffusion
from ...core.flow import flow_matching_losses
from ...core.models.adapters import adapter_disabled
from ...core.seeds import PerSampleNoise
from .config import SinglePassConfig
from .ema import EMA

Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def noise_level(t: torch.Tensor, flow: bool, num_timesteps: int) -> torch.Tensor:
    """Normalised noise level in [0, 1] (1 = pure noise): DiT step / (T - 1); SiT time 1 - t (t = 0 is noise)."""
    return 1.0 - t.float() if flow else t.float() / (num_timesteps - 1)


def guidance_offset(cond: torch.Tensor, guide: torch.Tensor, w: torch.Tensor, data_channels: int) -> torch.Tensor:
    """(w - 1) * (cond - guide) on the data channels, (N, C, H, W): the sampler's DoG prediction minus cond.

    cond, guide: (N, K, H, W) predictions (K >= C; further channels are variance and get no offset,
    as the sampler takes the variance from the conditional branch); w: (N,) per-sample weights.
    ``apply_guidance(cond, guide, w) - cond`` is the same number up to rounding (tested against the
    sampler); this form is exactly zero at w = 1, so w = 1 trains exactly like the plain loss.
    """
    c = data_channels
    scale = (w.to(cond.dtype) - 1).reshape(-1, *([1] * (cond.ndim - 1)))  # (N, 1, 1, 1)
    return scale * (cond[:, :c] - guide[:, :c])


def single_pass_offset(teacher: Predict, guide: Predict, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                       guide_null: int, w: torch.Tensor, active: torch.Tensor, data_channels: int) -> torch.Tensor:
    """The target offset (N, C, H, W), zero where ``active`` (N,) is False; no gradient flows through it."""
    offset = torch.zeros(x_t.shape[0], data_channels, *x_t.shape[2:], device=x_t.device, dtype=torch.float32)
    if not bool(active.any()):
        return offset
    idx = active.nonzero(as_tuple=True)[0]
    xs, ts, ys = x_t[idx], t[idx], labels[idx]
    with torch.no_grad():
        cond = teacher(xs, ts, ys).float()  # (n, K, H, W)
        unc = guide(xs, ts, torch.full_like(ys, guide_null)).float()
    offset[idx] = guidance_offset(cond, unc, w[idx].float(), data_channels)
    return offset


def guided_losses(out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  offset: torch.Tensor, diffusion: GaussianDiffusion | None) -> dict[str, torch.Tensor]:
    """The model's own loss with its regression target moved by ``offset`` (per-sample terms, (N,)).

    eps models (``diffusion`` given): eps target ``noise + offset``; the variance bound is unchanged
    (it does not see the target). Velocity models (``diffusion=None``): target ``x0 - noise + offset``.
    """
    if diffusion is not None:
        return diffusion.training_losses(out, x0, x_t, t, noise + offset)
    return flow_matching_losses(out, x0 + offset, noise)


def draw_w(rng: PerSampleNoise, rate: float, w_max: float | None, dist: str = "exponential",
           w_min: float = 1.0) -> torch.Tensor:
    """(N,) guidance weights from each sample's own stream (inverse CDF): exponential, w = 1 + z with
    z ~ Exp(rate) clipped at ``w_max``; uniform, w in [w_min, w_max) (DogFit's two choices)."""
    u = rng.rand().double()  # [0, 1)
    if dist == "uniform":
        if w_max is None:
            raise ValueError("uniform w draws need w_max (the upper end)")
        return (w_min + (w_max - w_min) * u).float()
    w = 1.0 - torch.log1p(-u) / rate
    if w_max is not None:
        w = w.clamp(max=w_max)
    return w.float()


def exponential_rate(upper: float, p: float) -> float:
    """DogFit's rate for w - 1 ~ Exp(rate): -ln(1 - p) / (upper - 1), so that a share ``p`` of the draws is below
    ``upper``."""
    return -math.log1p(-p) / (upper - 1.0)


def signal_level(t: torch.Tensor, flow: bool, num_timesteps: int) -> torch.Tensor:
    """1 - noise level, in each model's own time: SiT time t itself (1 = data), DiT 1 - step / (T - 1)."""
    return t.float() if flow else 1.0 - t.float() / (num_timesteps - 1)


class SinglePassTarget:
    """The single-pass pieces of one training run: w draws, where the offset applies, teacher and guide calls.

    ``net``: the trained network (unwrapped); ``guide_net`` + ``guide_null``: the frozen pre-trained model
    (the same network with the adapter / DiffFit factors off for LoRA / DiffFit); ``trainable`` + ``ema``:
    the EMA swapped in for the teacher call.
    """

    def __init__(self, cfg: SinglePassConfig, net: nn.Module, guide_net: nn.Module, guide_null: int | None,
                 adapter_off: bool, flow: bool, num_timesteps: int, data_channels: int):
        if guide_null is None:
            raise ValueError("single_pass needs a pre-trained guide with a null label (its eps_pre(x, null)); "
                             "this base has none")
        self.cfg, self.net, self.guide_net, self.guide_null = cfg, net, guide_net, guide_null
        self.adapter_off, self.flow, self.num_timesteps, self.c = adapter_off, flow, num_timesteps, data_channels

    def weights(self, rng: PerSampleNoise) -> torch.Tensor:
        """(N,) w per sample: drawn when w is a model input, else the configured w."""
        c = self.cfg
        if c.w_cond:
            rate = exponential_rate(*c.w_rate_from) if c.w_rate_from else c.w_rate
            return draw_w(rng, rate, c.w_max, c.w_dist, c.w_min)
        return torch.full((len(rng),), float(c.w), device=rng.device)

    def cutoff_side(self) -> str:
        """low-noise or high-noise: where the offset applies (``release``: DiT low-noise, SiT high-noise)."""
        side = self.cfg.cutoff_side
        return ("high-noise" if self.flow else "low-noise") if side == "release" else side

    def active(self, t: torch.Tensor, step: int, kept: torch.Tensor) -> torch.Tensor:
        """(N,) bool: rows that get the offset at optimizer step ``step`` (1-based); ``kept``: label not dropped."""
        if step <= self.cfg.start_step:
            return torch.zeros_like(kept)
        on = kept.clone()
        if self.cfg.cutoff is not None:  # the share `cutoff` of the noise range at one end
            level = noise_level if self.cutoff_side() == "low-noise" else signal_level
            on &= level(t, self.flow, self.num_timesteps) < self.cfg.cutoff
        return on

    def _guide(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.adapter_off:
            return self.guide_net(x, t, y)
        off = getattr(self.net, "factors_disabled", None)  # DiffFit, else a LoRA adapter
        with off() if off is not None else adapter_disabled(self.net):
            return self.net(x, t, y)

    def offset(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: torch.Tensor, active: torch.Tensor,
               ema: EMA, trainable: dict[str, torch.Tensor], autocast: Any = None) -> torch.Tensor:
        """(N, C, H, W) offset: teacher = the EMA network (at w = 1 when w is an input), guide at its null label."""
        kw: dict[str, Any] = {}

        def teacher(x: torch.Tensor, tt: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            if self.cfg.w_cond:
                kw["w"] = torch.ones(x.shape[0], device=x.device)
            with ema.applied(trainable):
                return self.net(x, tt, yy, **kw)

        was_training = self.net.training
        self.net.eval()  # eval(): no LoRA dropout in the teacher / guide calls
        try:
            with autocast if autocast is not None else contextlib.nullcontext():
                return single_pass_offset(teacher, self._guide, x_t, t, y, self.guide_null, w, active, self.c)
        finally:
            self.net.train(was_training)

    def model_w(self, w: torch.Tensor, active: torch.Tensor) -> torch.Tensor | None:
        """The w input of a w-conditioned model: the drawn w where the offset applies, 1 elsewhere."""
        if not self.cfg.w_cond:
            return None
        return torch.where(active, w, torch.ones_like(w))

    def record(self, base_sha256: str | None) -> dict[str, Any]:
        """What a checkpoint records: guidance-distilled, for which w (or w as an input), and how."""
        c = self.cfg
        rate = (exponential_rate(*c.w_rate_from) if c.w_rate_from else c.w_rate) if c.w_cond else None
        return {"method": "dog-single-pass", "w": c.w, "w_cond": c.w_cond, "w_rate": rate if c.w_dist == "exponential" else None,
                "w_max": c.w_max if c.w_cond else None,
                **({"w_dist": c.w_dist, "w_min": c.w_min} if c.w_cond and c.w_dist != "exponential" else {}),
                "start_step": c.start_step, "cutoff": c.cutoff, "guide_sha256": base_sha256,
                **({"cutoff_side": self.cutoff_side()} if c.cutoff is not None and c.cutoff_side != "low-noise" else {}),
                "sampling": "unguided (one network evaluation per step)"
                + (f"; choose w with --model-w (default {c.w:g})" if c.w_cond else "")}
