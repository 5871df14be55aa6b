"""Every checkpoint format, read and written through one module (the public checkpoint API).

Formats ``load_model`` detects (``LoadedModel.format``):

- ``"dir"``: ours, a directory with ``model.safetensors`` + ``config.json`` (a DiTConfig) +
  ``metadata.json`` (free-form metadata such as the training step or the parent's sha256). A
  training checkpoint directory also holds ``train_state.pt``: ``which="model"`` reads the raw
  (non-EMA) weights from it, ``which="ema"`` the EMA weights of ``model.safetensors``.
- ``"safetensors"``: ours as one file, ``name.safetensors`` whose header holds the config and
  metadata, plus a readable copy in ``name.json``; a bare official-layout ``.safetensors`` file
  (no config) has its config inferred from shapes.
- ``"dit-raw"``: official ``DiT-XL-2-256x256.pt`` (SiT too): a pickled dict of tensors.
- ``"dit-train"``: a DiT/SiT training checkpoint ``{"model", "ema", "opt", "args"}`` (``which``).
- ``"diffusers"``: a ``DiTTransformer2DModel`` folder (or a pipeline folder with ``transformer/``),
  mapped back to the official layout (see :mod:`.checkpoint_formats` for what is exact).
- ``"lora"``: ours, a LoRA run (adapter weights + target label table + configs + base reference),
  see :mod:`.lora_checkpoints`.

A training run directory means its ``checkpoints/latest``; any other path must exist (nothing is
looked up elsewhere). Reading lives in :mod:`.checkpoint_read`, LoRA in :mod:`.lora_checkpoints`;
both are re-exported here. Pickles are only read with ``torch.load(weights_only=True)``; writes
are atomic.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors.torch import save_file
from torch import nn

from ..core.models.adapters import dual_label_embedder, has_adapter
from ..core.models.config import DiTConfig
from ..core.models.dit import DiT
from .atomic import dumps_json, write_json
from .checkpoint_files import CheckpointError, atomic_dir, atomic_file, checkpoint_sha256, sha256_file
from .checkpoint_formats import build_dit, check_state_dict, cpu_tensors, infer_config, strip_prefixes
from .checkpoint_read import (CONFIG_NAME, FORMAT_VERSION, METADATA_NAME, REPLACEABLE, WEIGHTS_NAME, detect_format,
                              read_state_dict, resolve_checkpoint)
from .lora_checkpoints import LORA_TAG, TABLE_KEY, load_lora, save_lora

__all__ = ["CheckpointError", "LoadedModel", "load_model", "save_model", "save_checkpoint", "save_lora", "load_lora",
           "retarget", "convert_checkpoint", "detect_format", "read_state_dict", "resolve_checkpoint", "infer_config",
           "sha256_file", "checkpoint_sha256", "LORA_TAG", "TABLE_KEY"]

FORMAT_TAG = "domain_guidance/dit"


# ---- reading ----------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A loaded checkpoint: the network and what is known about where it came from.

    Fields:
        net: the network in eval mode: a DiT, or for ``format == "lora"`` the peft model (adapter on).
        config: its DiTConfig; for LoRA the fine-tuned (target) config: its classes and null label.
        format: "dir", "safetensors", "dit-raw", "dit-train", "diffusers" or "lora" (see the module doc).
        path: the checkpoint actually read (a run directory resolved to its latest checkpoint, a
            diffusers pipeline folder to its ``transformer/``).
        which: the weight set actually loaded, "ema" or "model"; None for a file holding one set of
            unknown kind (an official release, a bare safetensors file, a diffusers folder).
        metadata: free-form metadata stored with our formats (training step, provenance), else {}.
        notes: remarks on the conversion (e.g. diffusers computes a slightly different function).
        base_config: LoRA only: the pre-trained config (the guide's, with its own null label).
        base_path: LoRA only: the base checkpoint that was read.
        details: format-specific extras: "dit-train" ``args`` and ``keys``; "lora" ``lora`` (rank,
            alpha, targets, dropout), ``base`` (the stored reference) and ``base_info``.
    """

    net: nn.Module
    config: DiTConfig
    format: str
    path: Path
    which: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    base_config: DiTConfig | None = None
    base_path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The former ``info`` dict (format, path, which, metadata, notes, details, base_config)."""
        out = {"format": self.format, "path": str(self.path), "which": self.which, "metadata": self.metadata,
               "notes": self.notes, **self.details}
        return out if self.base_config is None else {**out, "base_config": self.base_config}

    def __iter__(self) -> Iterator[Any]:
        """Transition only: ``net, config, info = load_model(...)``; use the attributes instead."""
        warnings.warn("unpacking load_model() is deprecated: use .net, .config, .which, ... of LoadedModel",
                      DeprecationWarning, stacklevel=2)
        return iter((self.net, self.config, self.info()))


def _loaded(net: nn.Module, config: DiTConfig, info: dict[str, Any], **more: Any) -> LoadedModel:
    known = ("format", "path", "which", "metadata", "notes", "base_config")
    return LoadedModel(net, config, info["format"], Path(info["path"]), info["which"], info["metadata"], info["notes"],
                       details={k: v for k, v in info.items() if k not in known}, **more)


def load_model(path_or_id: str | os.PathLike, which: str = "ema", config: DiTConfig | None = None,
               reinterpret: bool = False, **overrides: Any) -> LoadedModel:
    """Load any supported checkpoint as a :class:`LoadedModel` (network in eval mode, config, provenance).

    ``which`` picks ``"ema"`` or ``"model"`` (raw) weights where a checkpoint holds both (an official
    training ``.pt``, one of our training checkpoint directories); ``.which`` says what was loaded.
    ``config`` replaces the stored or inferred config; ``overrides`` change fields of it, e.g.
    ``prediction="velocity"`` for a SiT checkpoint, ``num_heads`` for a size not in the registry.
    A LoRA directory gives the peft model and the target config; ``.base_config`` is the pre-trained one.
    Its stored configs win: ``prediction`` may only be declared when it agrees with them.
    So do every format's stored facts (a stored config, a training ``.pt``'s ``args.model``, a file's
    ``weights`` entry): a contradicting declaration is a CheckpointError naming both, unless
    ``reinterpret=True`` (a training initialisation only; ``.details["reinterpreted"]`` records it).
    """
    path = resolve_checkpoint(path_or_id)
    if detect_format(path) == "lora":
        declared = overrides.pop("prediction", None)
        if config is not None or overrides:
            raise CheckpointError(f"{path}: a LoRA checkpoint carries its own configs; config/overrides are not applied")
        model, base_cfg, target_cfg, info = load_lora(path, which=which)
        if declared is not None and declared != target_cfg.prediction:
            raise CheckpointError(f"{path}: prediction={declared!r} was declared, but this LoRA checkpoint's stored "
                                  f"configs say {target_cfg.prediction!r} (they win); drop the declaration")
        return _loaded(model, target_cfg, info, base_config=base_cfg, base_path=Path(info["base"]["resolved"]))
    sd, cfg, info = read_state_dict(path, which, config, reinterpret, **overrides)
    return _loaded(build_dit(sd, cfg, str(path)), cfg, info)


# ---- writing ----------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, weights: nn.Module | Mapping[str, torch.Tensor], config: DiTConfig,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write our format atomically: a directory, or ``*.safetensors`` + sibling ``*.json``."""
    path, tensors, metadata = Path(path), cpu_tensors(weights), dict(metadata or {})
    check_state_dict(tensors, config, f"{path} (refusing to save)")
    described = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "metadata": metadata}
    text = dumps_json(described, f"{path} metadata")  # NaN/inf refused before anything is written
    header = {"format": FORMAT_TAG, "config": config.to_json(), "metadata": json.dumps(metadata, sort_keys=True, default=str)}
    if path.suffix == ".safetensors":
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        write_json(path.with_suffix(".json"), {**described, "config": config.to_dict()})
        return path
    with atomic_dir(path, REPLACEABLE) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=header)
        (tmp / CONFIG_NAME).write_text(config.to_json() + "\n")
        (tmp / METADATA_NAME).write_text(text)
    return path


def save_model(path: str | os.PathLike, model: nn.Module | Mapping[str, torch.Tensor], config: DiTConfig | None = None,
               metadata: Mapping[str, Any] | None = None, *, base: str | os.PathLike | None = None,
               base_which: str = "ema") -> Path:
    """Save a DiT (or state dict) in our format, or a LoRA model as a LoRA checkpoint (needs ``base``)."""
    if isinstance(model, nn.Module) and (has_adapter(model) or dual_label_embedder(model) is not None):
        if base is None:
            raise CheckpointError(f"{path}: saving a LoRA model needs base= (the base checkpoint it was built on)")
        return save_lora(path, model, base=base, base_which=base_which, target_config=config, metadata=metadata)
    cfg = config if config is not None else getattr(model, "config", None)
    if not isinstance(cfg, DiTConfig):
        raise CheckpointError(f"{path}: no DiTConfig given and the model has none")
    return save_checkpoint(path, model, cfg, metadata)


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, which: str = "ema",
                       config: DiTConfig | None = None, metadata: Mapping[str, Any] | None = None,
                       **overrides: Any) -> Path:
    """Convert an official / training / diffusers / safetensors checkpoint to our format, with provenance."""
    sd, cfg, info = read_state_dict(src, which, config, False, **overrides)
    origin = {"path": str(Path(info["path"]).resolve()), "format": info["format"], "which": info["which"],
              "sha256": checkpoint_sha256(info["path"])}
    weights = {"weights": info["which"]} if info["which"] else {}  # so the copy says which set it holds
    return save_checkpoint(dst, sd, cfg, {"converted_from": origin, **weights, **(metadata or {})})


# ---- label-table surgery ----------------------------------------------------------------------

def retarget(source: nn.Module | Mapping[str, torch.Tensor], config: DiTConfig | None = None, *, num_classes: int,
             null_class: bool = True, class_dropout_prob: float | None = None, seed: int = 0) -> tuple[DiT, DiTConfig]:
    """A new DiT for a K-class target domain: fresh ``K(+1)`` label table ~ N(0, 0.02), all else copied.

    Every tensor is cloned, so training the result never touches ``source`` (the guide keeps its
    own table and null label). ``class_dropout_prob`` defaults to the source's (0 without a null row).
    """
    if isinstance(source, nn.Module):
        if has_adapter(source) or dual_label_embedder(source) is not None:
            raise CheckpointError("retarget needs a plain DiT, not a LoRA model (add_lora makes its own target table)")
        config = config if config is not None else getattr(source, "config", None)
        sd = source.state_dict()
    else:
        sd = strip_prefixes(source)
    config = config if config is not None else infer_config(sd, "retarget source")
    check_state_dict(sd, config, "retarget source")
    drop = class_dropout_prob if class_dropout_prob is not None else (config.class_dropout_prob if null_class else 0.0)
    new_cfg = config.replace(num_classes=num_classes, null_class=null_class, class_dropout_prob=drop)
    old = sd["y_embedder.embedding_table.weight"]
    gen = torch.Generator().manual_seed(seed)
    table = (torch.randn(new_cfg.num_embeddings, new_cfg.hidden_size, generator=gen) * 0.02).to(old)
    new_sd = {k: v.detach().clone() for k, v in sd.items() if k != "y_embedder.embedding_table.weight"}
    new_sd["y_embedder.embedding_table.weight"] = table
    return build_dit(new_sd, new_cfg, "retarget"), new_cfg
