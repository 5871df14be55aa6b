"""LoRA on a DiT through peft, with a separate target-domain label table.

With the adapter off, the network is bit-for-bit the pre-trained one: peft's disabled LoRA
layers return the base layer's output, and the pre-trained label table (with its own null
row) is used instead of the target table. The target table is deliberately not a peft
``modules_to_save`` wrapper (diffusers' ``disable_adapters`` does not switch those off).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .config import DiTConfig
from .dit import DiT, LabelEmbedder

# Linear layers of every DiT block (and the output layer) that LoRA adapts by default.
DEFAULT_LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1", "final_layer.linear")


class DualLabelEmbedder(nn.Module):
    """Holds the frozen pre-trained table (``base``) and the trainable target table (``target``)."""

    def __init__(self, base: LabelEmbedder, target: LabelEmbedder):
        super().__init__()
        self.base = base
        self.target = target
        self.use_target = True
        self.select: torch.Tensor | None = None  # (N,) bool: per-sample table in a mixed batch (True: target)

    def forward(self, labels: torch.Tensor, train: bool) -> torch.Tensor:
        if self.select is None:
            return (self.target if self.use_target else self.base)(labels, train)
        if self.select.shape != labels.shape:
            raise ValueError(f"per-sample adapter selection of shape {tuple(self.select.shape)} for "
                             f"{tuple(labels.shape)} labels")
        sel = self.select
        # each half indexes only its own table: a base null label may be out of the target table's range
        emb_t = self.target(labels[sel], train)  # (n_on, D)
        emb_b = self.base(labels[~sel], train)  # (n_off, D)
        out = emb_t.new_empty(labels.shape[0], emb_t.shape[-1])  # (N, D)
        out[sel], out[~sel] = emb_t, emb_b.to(emb_t.dtype)
        return out


def add_lora(net: DiT, target_config: DiTConfig, rank: int = 32, alpha: float | None = None,
             targets: tuple[str, ...] = DEFAULT_LORA_TARGETS, dropout: float = 0.0):
    """Freeze ``net`` (the pre-trained DiT), add LoRA adapters and a fresh target label table.

    ``target_config`` is the fine-tuned model's config (its ``num_classes``, ``null_class`` and
    ``class_dropout_prob``); everything else must match ``net.config``. Returns a peft model
    whose trainable parameters are the LoRA weights and the target table.
    """
    base_space, target_space = net.config.input_space(), target_config.input_space()
    if base_space != target_space:
        raise ValueError(f"target config input space {target_space} differs from the pre-trained {base_space}")
    for p in net.parameters():
        p.requires_grad_(False)
    target_table = LabelEmbedder(target_config.num_classes, target_config.hidden_size,
                                 target_config.class_dropout_prob, target_config.null_class)
    nn.init.normal_(target_table.embedding_table.weight, std=0.02)
    net.y_embedder = DualLabelEmbedder(net.y_embedder, target_table)
    lora = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                      target_modules=list(targets), bias="none")
    model = get_peft_model(net, lora)
    for p in target_table.parameters():
        p.requires_grad_(True)
    return model


def dual_label_embedder(model: nn.Module) -> DualLabelEmbedder | None:
    for module in model.modules():
        if isinstance(module, DualLabelEmbedder):
            return module
    return None


def has_adapter(model: nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


@contextlib.contextmanager
def adapter_per_sample(model: nn.Module, on: torch.Tensor) -> Iterator[dict]:
    """Run one batch where sample i uses the adapter iff ``on[i]`` (``on``: (N,) bool).

    Yields the keyword arguments to pass to ``model(...)`` (peft's mixed-adapter batch: LoRA
    layers add their update only to the selected rows); the label table follows the same
    selection (target table where on, the pre-trained table where off).
    """
    table = dual_label_embedder(model)
    active = {tuple(m.active_adapters) for m in model.modules() if isinstance(m, BaseTunerLayer)}
    if len(active) != 1 or len(next(iter(active))) != 1:
        raise ValueError(f"per-sample adapter selection needs a peft-adapted model with one active adapter; "
                         f"found {sorted(active) or 'no adapter layers'}")
    name = next(iter(active))[0]
    on = on.to(torch.bool)
    names = [name if v else BASE_ADAPTER for v in on.tolist()]
    if table is not None:
        table.select = on
    try:
        yield {"adapter_names": names}
    finally:
        if table is not None:
            table.select = None


@contextlib.contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as the pre-trained network: LoRA off and the pre-trained label table on."""
    table = dual_label_embedder(model)
    tuner_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if table is None and not tuner_layers:
        raise ValueError("model has no adapter to switch off")
    previous = [m.disable_adapters for m in tuner_layers]
    try:
        for m in tuner_layers:
            m.enable_adapters(False)
        if table is not None:
            table.use_target = False
        yield model
    finally:
        for m, was_disabled in zip(tuner_layers, previous):
            m.enable_adapters(not was_disabled)
        if table is not None:
            table.use_target = True
