"""DiffFit (Xie et al., 2023): parameter-efficient fine-tuning of a frozen DiT.

Trained: every bias (as an offset added to the frozen one), one scale factor per channel on each
block's two residual branches (``x + gamma * gate * branch``), and a fresh target label table.
DiT's LayerNorms carry no affine parameters (adaLN modulates them), so there are no norm weights
to train. With the factors off the network is the frozen base, bit for bit: it is its own
pre-trained guide, with one copy of the weights (like LoRA with the adapter off).

The factors fold exactly into the base layout: ``gamma * (W c + b) = (gamma W) c + gamma b`` on the
gate rows of ``adaLN_modulation``, so ``merged_state_dict`` is an ordinary DiT checkpoint that any
reader of the official layout can sample. The training forward runs the base module on those
same merged tensors (``torch.func.functional_call``), so the export equals what was trained.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.func import functional_call

from .config import DiTConfig
from .dit import DiT, LabelEmbedder

TABLE = "y_embedder.embedding_table.weight"


def _slot(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


class DiffFit(nn.Module):
    """A frozen DiT (``base``) plus DiffFit's trained parts; call as ``(x, t, y, w=None)`` like a DiT.

    ``target_config``: the fine-tuned model's config (its classes and null label); everything else
    must match the base. A w embedder already on ``base`` (single-pass w-conditioning) stays trainable.
    """

    def __init__(self, base: DiT, target_config: DiTConfig):
        super().__init__()
        if base.config.input_space() != target_config.input_space():
            raise ValueError(f"target config input space {target_config.input_space()} differs from the base's "
                             f"{base.config.input_space()}")
        for n, p in base.named_parameters():
            p.requires_grad_(n.startswith("w_embedder."))
        self.base = base
        self.config = target_config.replace(w_embed=base.config.w_embed)
        self.bias_names = [n for n, p in base.named_parameters() if n.endswith(".bias") and not n.startswith("w_embedder.")]
        params = dict(base.named_parameters())
        self.bias_delta = nn.ParameterDict({_slot(n): nn.Parameter(torch.zeros_like(params[n])) for n in self.bias_names})
        d = base.config.hidden_size
        ref = params["x_embedder.proj.weight"]
        self.gamma = nn.Parameter(torch.ones(len(base.blocks), 2, d, device=ref.device, dtype=ref.dtype))  # (B, attn|mlp, D)
        self.target_table = LabelEmbedder(target_config.num_classes, d, target_config.class_dropout_prob,
                                          target_config.null_class).to(device=ref.device, dtype=ref.dtype)
        nn.init.normal_(self.target_table.embedding_table.weight, std=0.02)
        self.factors_on = True

    def merged_parameters(self) -> dict[str, torch.Tensor]:
        """Base-layout tensors of the fine-tuned function: biases + offsets, gates scaled, target table."""
        params = dict(self.base.named_parameters())
        out = {n: params[n] + self.bias_delta[_slot(n)] for n in self.bias_names}
        d = self.base.config.hidden_size
        for i in range(len(self.base.blocks)):
            wname, bname = f"blocks.{i}.adaLN_modulation.1.weight", f"blocks.{i}.adaLN_modulation.1.bias"
            one = torch.ones(d, device=self.gamma.device, dtype=self.gamma.dtype)
            # chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
            scale = torch.cat([one, one, self.gamma[i, 0], one, one, self.gamma[i, 1]])  # (6D,)
            out[wname] = params[wname] * scale[:, None]
            out[bname] = out[bname] * scale
        out[TABLE] = self.target_table.embedding_table.weight
        return out

    @torch.no_grad()
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The fine-tuned model as a plain DiT state dict (official keys, ``config`` as its DiTConfig)."""
        merged = self.merged_parameters()
        return {k: merged.get(k, v).detach().clone() for k, v in self.base.state_dict().items()}

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W), t: (N,), y: (N,) -> (N, out_channels, H, W); factors off: the base network."""
        if not self.factors_on:
            return self.base(x, t, y, w)
        if self.base.gradient_checkpointing and self.training:
            raise ValueError("DiffFit does not combine with gradient_checkpointing (the recomputation would see the "
                             "base tensors); set gradient_checkpointing=false")
        return functional_call(self.base, self.merged_parameters(), (x, t, y), {"w": w}, strict=False)

    @contextlib.contextmanager
    def factors_disabled(self) -> Iterator["DiffFit"]:
        """Run as the frozen base (its own label table and null label): the DoG guide."""
        was = self.factors_on
        self.factors_on = False
        try:
            yield self
        finally:
            self.factors_on = was


def add_difffit(base: DiT, target_config: DiTConfig) -> DiffFit:
    """Freeze ``base`` and wrap it for DiffFit fine-tuning toward ``target_config``'s classes."""
    return DiffFit(base, target_config)
