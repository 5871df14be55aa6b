"""The networks of a run: a new DiT (pre-training), a full fine-tune, LoRA or DiffFit on a frozen base.

Full fine-tuning keeps the pre-trained network as a separate frozen copy (the DoG guide of the
sample grids) when grids or single-pass targets need it: two copies of the weights; else one. LoRA keeps one: the guide is the same network with the
adapter off and its own (pre-trained) label table, while the new K(+1)-row target table is a
separate trainable table. DiffFit keeps one too: the guide is the frozen base module inside it
(its factors never touch it); the export folds the factors into an ordinary DiT checkpoint.
A single-pass run with w as an input adds a w embedder (zero output when fresh) to the trained net.

Label dropout is not done by the network here: the loop replaces dropped labels by the null
label from each sample's own seed, so it does not depend on the number of processes. The
networks' internal dropout (``LabelEmbedder.dropout_prob``, which uses the global RNG in train
mode) is set to 0 for training; configs still record the dropout probability.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ...core.models import DiT, DiTConfig, dit_config
from ...core.models.adapters import add_lora, has_adapter
from ...core.models.difffit import DiffFit
from ...core.models.dit import LabelEmbedder
from ...io.checkpoints import checkpoint_sha256, load_model, retarget, save_checkpoint, save_lora
from .config import TrainConfig
from .ema import EMA


@dataclass
class Models:
    """``net`` is what trains; ``guide_net`` + ``base_config`` is the pre-trained guide (None when scratch)."""

    net: nn.Module
    config: DiTConfig  # the trained (target) model's config: its classes and null label
    base_config: DiTConfig | None = None
    guide_net: nn.Module | None = None  # full: a frozen copy of the base; lora: `net` itself (adapter off); difffit: net.base
    base_path: Path | None = None
    base_sha256: str | None = None
    mode: str = "full"
    base_which: str = "ema"
    distilled: dict[str, Any] | None = None  # single-pass: {"w": ...}, the w its sample grids feed a w-conditioned net

    def trainable(self) -> dict[str, nn.Parameter]:
        """Named parameters that the optimizer updates (and the EMA tracks)."""
        return {n: p for n, p in self.net.named_parameters() if p.requires_grad}

    def dit(self) -> DiT:
        return next(m for m in self.net.modules() if isinstance(m, DiT))

    @property
    def guide_is_adapter_off(self) -> bool:
        return self.guide_net is self.net


def resolve_base(path: str | os.PathLike) -> Path:
    """A checkpoint path; a training run directory resolves to its latest checkpoint directory."""
    from .state import find_latest

    p = Path(path).expanduser()
    if p.is_dir() and (p / "checkpoints").is_dir():
        latest = find_latest(p)
        if latest is None:
            raise FileNotFoundError(f"run directory {p} has no complete checkpoint yet (expected {p}/checkpoints/latest)")
        return latest.resolve()
    if not p.exists():
        raise FileNotFoundError(f"base checkpoint {p} does not exist (a checkpoint file/directory or a run directory)")
    return p.resolve()


def load_base(cfg: TrainConfig) -> tuple[DiT, DiTConfig, Path, str]:
    """(pre-trained DiT in eval mode, its config, resolved path, sha256) from ``cfg.base``."""
    path = resolve_base(cfg.base)
    declared = {} if cfg.base_prediction == "auto" else {"prediction": cfg.base_prediction}  # raw SiT .pt: velocity
    # A declaration contradicting the base's stored prediction is refused unless base_reinterpret names it
    # (the flow source starts from the eps source's weights); the run's train_config records it.
    loaded = load_model(path, which=cfg.base_which, reinterpret=cfg.base_reinterpret, **declared)
    net, base_cfg = loaded.net, loaded.config
    if has_adapter(net) or not isinstance(net, DiT):
        raise ValueError(f"base {path} is a LoRA checkpoint; fine-tune from a full model (merge it first)")
    return net, base_cfg, path, checkpoint_sha256(path)


def disable_internal_label_dropout(net: nn.Module) -> None:
    """Label dropout is seeded per sample in the loop; the network's own (global-RNG) dropout is off."""
    for m in net.modules():
        if isinstance(m, LabelEmbedder):
            m.dropout_prob = 0.0


def build_models(cfg: TrainConfig, num_classes: int, label_dropout: float, shape: tuple[int, int, int],
                 base: tuple[DiT, DiTConfig, Path, str] | None, vae_source: str | None = None,
                 vae_scale: float | None = None) -> Models:
    """Networks for ``num_classes`` target classes; a null row exists iff ``label_dropout > 0``."""
    null = label_dropout > 0
    torch.manual_seed(cfg.seed)  # fresh label tables / scratch weights depend on the run seed only
    if base is None:
        c, h, w = shape
        overrides: dict[str, Any] = dict(input_size=h if h == w else (h, w), in_channels=c, num_classes=num_classes,
                                         null_class=null, class_dropout_prob=label_dropout, learn_sigma=cfg.learn_sigma,
                                         latent=vae_source is not None, vae=vae_source)
        if vae_scale is not None:
            overrides["latent_scale"] = vae_scale
        overrides.update(cfg.model_overrides)
        try:
            config = dit_config(cfg.model, **overrides)
        except TypeError as e:
            raise ValueError(f"model_overrides {cfg.model_overrides}: not DiTConfig fields ({e})") from None
        net = DiT(config)
        models = Models(net, config, mode="full")
    else:
        base_net, base_cfg, path, sha = base
        w_cond = cfg.single_pass.enabled and cfg.single_pass.w_cond
        if cfg.mode == "difffit":
            target = base_cfg.replace(num_classes=num_classes, null_class=null, class_dropout_prob=label_dropout,
                                      **({"vae": vae_source} if vae_source else {}))
            if w_cond:
                base_net.add_w_embedder()  # trained; the guide calls the base without w, so it never sees it
            net = DiffFit(base_net, target)
            models = Models(net, net.config, base_cfg, net.base, path, sha, "difffit", cfg.base_which)
        elif cfg.mode == "lora":
            target = base_cfg.replace(num_classes=num_classes, null_class=null, class_dropout_prob=label_dropout,
                                      **({"vae": vae_source} if vae_source else {}))
            lr = cfg.lora
            net = add_lora(base_net, target, rank=lr.rank, alpha=lr.alpha, targets=tuple(lr.targets), dropout=lr.dropout)
            models = Models(net, target, base_cfg, net, path, sha, "lora", cfg.base_which)
        else:
            net, target = retarget(base_net, base_cfg, num_classes=num_classes, null_class=null,
                                   class_dropout_prob=label_dropout, seed=cfg.seed)
            if vae_source:
                target = target.replace(vae=vae_source)
                net.config = target
            if w_cond:
                net.add_w_embedder()
                target = net.config
            base_net.requires_grad_(False)
            # the frozen copy is the guide of the DoG sample grids and of single-pass targets only: without
            # either it is dropped (one copy of the weights less on the device: 2.7 GB for DiT-XL/2 in fp32)
            keep_guide = bool(cfg.sample_every) or cfg.single_pass.enabled
            models = Models(net, target, base_cfg, base_net.eval() if keep_guide else None, path, sha, "full",
                            cfg.base_which)
    if cfg.single_pass.enabled:
        models.distilled = {"method": "dog-single-pass", "w": cfg.single_pass.w, "w_cond": cfg.single_pass.w_cond}
    if not models.trainable():
        raise ValueError("the model has no trainable parameters")
    disable_internal_label_dropout(models.net)
    models.dit().gradient_checkpointing = cfg.gradient_checkpointing
    return models


def ema_state_dict(models: Models, ema: EMA) -> dict[str, torch.Tensor]:
    """Full-model state dict (official keys) with the EMA weights for every trained tensor."""
    sd = models.net.state_dict()
    return {k: ema.shadow[k] if k in ema.shadow else v for k, v in sd.items()}


def export_for_sampling(models: Models, ema: EMA, path: Path, metadata: Mapping[str, Any]) -> None:
    """Write the EMA weights where ``io.checkpoints.load_model`` (and ``dog sample``) reads them.

    Full / scratch: ``model.safetensors`` + ``config.json`` + ``metadata.json``. LoRA: only what
    was trained (``lora.safetensors``: adapter + target table) + ``lora.json`` (configs, base path
    and sha256). ``path`` must not exist yet.
    """
    if models.mode == "difffit":  # the factors folded into the base layout: an ordinary DiT checkpoint
        with ema.applied(models.trainable()):
            merged = models.net.merged_state_dict()
        save_checkpoint(path, merged, models.config, {**metadata, "difffit": {"folded": True}})
    elif models.mode == "lora":
        with ema.applied(models.trainable()):
            save_lora(path, models.net, base=models.base_path, base_which=models.base_which, target_config=models.config,
                      base_sha256=models.base_sha256, metadata=dict(metadata))
    else:
        save_checkpoint(path, ema_state_dict(models, ema), models.config, dict(metadata))


def count_storages(*modules: nn.Module) -> tuple[int, int]:
    """(distinct tensor storages, their total bytes) over the parameters and buffers of ``modules``."""
    seen: dict[int, int] = {}
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return len(seen), sum(seen.values())
