"""LoRA checkpoints: what a LoRA run trains (peft adapter + target label table) and where its base is.

Layout of a LoRA directory::

    lora.safetensors   peft adapter weights + the target label table (``TABLE_KEY``)
    lora.json          format tag, LoRA settings, base reference (path, relpath, which, sha256),
                       base and target DiTConfigs, free-form metadata

A training checkpoint directory also holds ``train_state.pt``; its ``model`` entry has the raw
(non-EMA) adapter weights, which ``load_lora(..., which="model")`` reads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn

from ..core.models.adapters import add_lora, dual_label_embedder, has_adapter
from ..core.models.config import DiTConfig
from ..core.models.dit import DiT, LabelEmbedder
from .atomic import dumps_json
from .checkpoint_files import CheckpointError, atomic_dir, checkpoint_sha256, load_safetensors, read_json
from .checkpoint_formats import build_dit, cpu_tensors
from .checkpoint_read import (FORMAT_VERSION, LORA_CONFIG_NAME, LORA_WEIGHTS_NAME, REPLACEABLE, TRAIN_STATE_NAME, parse_config,
                              pick_set, read_state_dict, read_train_state_weights)

__all__ = ["LORA_TAG", "TABLE_KEY", "load_lora", "save_lora"]

TABLE_KEY = "y_embedder.target.embedding_table.weight"  # target label table inside a LoRA file
LORA_TAG = "domain_guidance/lora"


def _table_config(base: DiTConfig, table: LabelEmbedder) -> DiTConfig:
    rows = table.embedding_table.num_embeddings
    return base.replace(num_classes=table.num_classes, null_class=rows == table.num_classes + 1,
                        class_dropout_prob=table.dropout_prob)


def save_lora(path: str | os.PathLike, model: nn.Module, *, base: str | os.PathLike, base_which: str = "ema",
              target_config: DiTConfig | None = None, base_sha256: str | None = None,
              metadata: Mapping[str, Any] | None = None) -> Path:
    """Save only what a LoRA run trains: peft adapter weights, target label table, configs, base reference."""
    path, base = Path(path), Path(base)
    dit = next((m for m in model.modules() if isinstance(m, DiT)), None)
    dual = dual_label_embedder(model)
    if dit is None or dual is None or not has_adapter(model) or not hasattr(model, "peft_config"):
        raise CheckpointError(f"{path}: save_lora needs a model made by add_lora (peft LoRA + target label table)")
    name = model.active_adapter
    pc = model.peft_config[name]
    if pc.rank_pattern or pc.alpha_pattern or pc.use_dora:
        raise CheckpointError(f"{path}: per-layer rank/alpha patterns and DoRA are not supported by add_lora")
    target = target_config if target_config is not None else _table_config(dit.config, dual.target)
    table = dual.target.embedding_table.weight
    if tuple(table.shape) != (target.num_embeddings, target.hidden_size):
        raise CheckpointError(f"{path}: target table {list(table.shape)} does not match the target config "
                              f"({target.num_embeddings} rows x {target.hidden_size})")
    tensors = cpu_tensors(get_peft_model_state_dict(model, adapter_name=name))
    tensors[TABLE_KEY] = table.detach().cpu().contiguous()
    targets = pc.target_modules if isinstance(pc.target_modules, str) else sorted(pc.target_modules)
    base_abs = base.resolve()
    described = {
        "format": LORA_TAG, "version": FORMAT_VERSION, "metadata": dict(metadata or {}),
        "lora": {"rank": pc.r, "alpha": pc.lora_alpha, "targets": targets, "dropout": pc.lora_dropout},
        "base": {"path": str(base_abs), "relpath": os.path.relpath(base_abs, path.resolve()), "which": base_which,
                 "sha256": base_sha256 or checkpoint_sha256(base)},
        "base_config": dit.config.to_dict(), "target_config": target.to_dict(),
    }
    text = dumps_json(described, str(path / LORA_CONFIG_NAME))  # before anything is written: NaN refused
    with atomic_dir(path, REPLACEABLE) as tmp:
        save_file(tensors, str(tmp / LORA_WEIGHTS_NAME), metadata={"format": LORA_TAG})
        (tmp / LORA_CONFIG_NAME).write_text(text)
    return path


def _find_base(path: Path, desc_file: Path, ref: Mapping[str, Any], base: str | os.PathLike | None,
               verify_base: bool) -> Path:
    if base is None:
        candidates = [Path(ref["path"]), (path / ref.get("relpath", "")).resolve()]
        base = next((c for c in candidates if c.exists()), None)
        if base is None:
            raise CheckpointError(f"{desc_file}: base checkpoint not found at {[str(c) for c in candidates]}; pass base=")
    base = Path(base)
    if verify_base and ref.get("sha256"):
        got = checkpoint_sha256(base)
        if got != ref["sha256"]:
            raise CheckpointError(f"{desc_file}: base checkpoint {base} has sha256 {got}, but the adapter was trained "
                                  f"on {ref['sha256']}; pass verify_base=False to load it anyway")
    return base


def _load_raw_adapter(model: nn.Module, path: Path, which: str) -> None:
    """Overwrite the trainable tensors (adapter + target table) with set ``which`` of the training state."""
    file = path / TRAIN_STATE_NAME
    tensors = read_train_state_weights(path, which, "lora")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(trainable - set(tensors)), sorted(set(tensors) - trainable)
    if missing or unexpected:
        raise CheckpointError(f"{file}: {which!r} LoRA tensors do not match the adapter in {path / LORA_CONFIG_NAME}: "
                              f"missing ({len(missing)}) {missing[:5]}; unexpected ({len(unexpected)}) {unexpected[:5]}")
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{file}: {which!r} LoRA tensors do not fit: {e}") from None


def load_lora(path: str | os.PathLike, base: str | os.PathLike | None = None, verify_base: bool = True,
              which: str = "ema") -> tuple[nn.Module, DiTConfig, DiTConfig, dict[str, Any]]:
    """Rebuild a LoRA model: base DiT from its checkpoint, ``add_lora`` with the saved settings, weights.

    Returns ``(peft model in eval mode, base config, target config, info)``; ``info["which"]`` is
    the adapter weight set loaded (see ``checkpoint_read.pick_set``). ``base`` overrides the
    stored base path; the base file's sha256 must match the stored one unless ``verify_base=False``.
    """
    path = Path(path)
    desc_file = path / LORA_CONFIG_NAME
    desc = read_json(desc_file)
    if desc.get("format") != LORA_TAG:
        raise CheckpointError(f"{desc_file}: format {desc.get('format')!r}, expected {LORA_TAG!r}")
    got_which, from_state = pick_set(path, desc.get("metadata", {}), which, "lora")
    ref = desc["base"]
    base = _find_base(path, desc_file, ref, base, verify_base)
    base_cfg, target_cfg = parse_config(desc["base_config"], desc_file), parse_config(desc["target_config"], desc_file)
    sd, base_cfg, base_info = read_state_dict(base, ref.get("which", "ema"), base_cfg)  # a LoRA base is refused
    net = build_dit(sd, base_cfg, str(base))
    lora = desc["lora"]
    targets = lora["targets"] if isinstance(lora["targets"], str) else tuple(lora["targets"])
    model = add_lora(net, target_cfg, rank=lora["rank"], alpha=lora["alpha"], targets=targets, dropout=lora["dropout"])
    weights_file = path / LORA_WEIGHTS_NAME
    tensors = load_safetensors(weights_file)
    table = tensors.pop(TABLE_KEY, None)
    target_table = dual_label_embedder(model).target.embedding_table.weight
    if table is None or table.shape != target_table.shape:
        found = "missing" if table is None else f"found {list(table.shape)}"
        raise CheckpointError(f"{weights_file}: key {TABLE_KEY} expected {list(target_table.shape)}, {found}")
    try:
        result = set_peft_model_state_dict(model, tensors)
    except RuntimeError as e:
        raise CheckpointError(f"{weights_file}: adapter weights do not fit (rank {lora['rank']}): {e}") from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{weights_file}: adapter keys do not match: missing ({len(missing)}) {missing[:5]}; "
                              f"unexpected ({len(result.unexpected_keys)}) {list(result.unexpected_keys)[:5]}")
    with torch.no_grad():
        target_table.copy_(table)
    if from_state:
        _load_raw_adapter(model, path, which)
    info = {"format": "lora", "path": str(path), "which": got_which, "metadata": desc.get("metadata", {}), "notes": [],
            "lora": lora, "base": {**ref, "resolved": str(base)}, "base_config": base_cfg, "base_info": base_info}
    return model.eval(), base_cfg, target_cfg, info
