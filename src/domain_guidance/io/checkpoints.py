"""Every checkpoint format, read and written in one place.

Formats ``load_model`` detects (the ``format`` entry of its ``info``):

- ``"dir"``: ours, a directory with ``model.safetensors`` + ``config.json`` (a DiTConfig) +
  ``metadata.json`` (free-form metadata such as the training step or the parent's sha256).
- ``"safetensors"``: ours as one file, ``name.safetensors`` whose header holds the config and
  metadata, plus a readable copy in ``name.json``; a bare official-layout ``.safetensors`` file
  (no config) has its config inferred from shapes.
- ``"dit-raw"``: official ``DiT-XL-2-256x256.pt`` (SiT too): a pickled dict of tensors.
- ``"dit-train"``: a DiT/SiT training checkpoint ``{"model", "ema", "opt", "args"}`` (``which``).
- ``"diffusers"``: a ``DiTTransformer2DModel`` folder (or a pipeline folder with ``transformer/``),
  mapped back to the official layout (see :mod:`.checkpoint_formats` for what is exact).
- ``"lora"``: ours, a LoRA run (adapter weights + target label table + configs + base reference).

Pickles are only read with ``torch.load(weights_only=True)``; writes are atomic.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.models.adapters import add_lora, dual_label_embedder, has_adapter
from ..core.models.config import DiTConfig
from ..core.models.dit import DiT, LabelEmbedder
from .checkpoint_files import (CheckpointError, atomic_dir, atomic_file, checkpoint_sha256, interrupted_save_hint,
                               read_json, safe_torch_load, sha256_file, write_json)
from .checkpoint_formats import build_dit, check_state_dict, diffusers_config, diffusers_to_official, infer_config, strip_prefixes

__all__ = ["CheckpointError", "load_model", "save_model", "save_checkpoint", "save_lora", "load_lora", "retarget",
           "convert_checkpoint", "detect_format", "read_state_dict", "infer_config", "sha256_file", "checkpoint_sha256"]

WEIGHTS_NAME, CONFIG_NAME, METADATA_NAME = "model.safetensors", "config.json", "metadata.json"
LORA_CONFIG_NAME, LORA_WEIGHTS_NAME = "lora.json", "lora.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
TABLE_KEY = "y_embedder.target.embedding_table.weight"  # target label table inside a LoRA file
FORMAT_TAG, LORA_TAG, VERSION = "domain_guidance/dit", "domain_guidance/lora", 1
_REPLACEABLE = (WEIGHTS_NAME, CONFIG_NAME, METADATA_NAME, LORA_CONFIG_NAME, LORA_WEIGHTS_NAME)  # all a checkpoint dir holds


def _cpu_tensors(weights: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def _owned(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safe_torch_load memory-maps: copy what we keep, or an in-place rewrite of the file would change it
    return {k: v.clone() for k, v in sd.items()}


def _config(d: Mapping[str, Any], source: Path | str) -> DiTConfig:
    try:
        return DiTConfig.from_dict(dict(d))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid DiT config: {e}") from None


# ---- reading ----------------------------------------------------------------------------------

def _resolve(path_or_id: str | os.PathLike) -> Path:
    path = Path(path_or_id).expanduser()
    if path.is_dir() and (path / "checkpoints" / "latest").exists():
        return path / "checkpoints" / "latest"  # a training run directory: its latest checkpoint
    if path.exists():
        return path
    legacy = Path("pretrained_models") / path.name  # where DiT's download.py puts official weights
    if legacy.exists():
        return legacy
    raise CheckpointError(
        f"{path_or_id}: no such file or directory{interrupted_save_hint(path)}. Model hub ids are not downloaded "
        "here: fetch the file first (official DiT weights: https://dl.fbaipublicfiles.com/DiT/models/) and pass its path")


def detect_format(path: str | os.PathLike) -> str:
    """Checkpoint format of an existing path: dir, safetensors, torch (raw or train), diffusers or lora."""
    path = Path(path)
    if path.is_dir():
        if (path / LORA_CONFIG_NAME).exists():
            return "lora"
        if (path / "model_index.json").exists() and (path / "transformer" / CONFIG_NAME).exists():
            return "diffusers"
        if (path / CONFIG_NAME).exists():
            if "_class_name" in read_json(path / CONFIG_NAME):
                return "diffusers"
            if (path / WEIGHTS_NAME).exists():
                return "dir"
        found = sorted(p.name for p in path.iterdir())[:8]
        raise CheckpointError(f"{path}: not a checkpoint directory: expected {WEIGHTS_NAME} + {CONFIG_NAME} (ours), "
                              f"{LORA_CONFIG_NAME} (LoRA) or a diffusers DiTTransformer2DModel folder; found {found}")
    return "safetensors" if path.suffix == ".safetensors" else "torch"


def _read_torch(path: Path, which: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    obj = safe_torch_load(path)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _owned(obj), {"format": "dit-raw"}
    if isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in ("ema", "model")):
        if which not in ("ema", "model") or not isinstance(obj.get(which), Mapping):
            raise CheckpointError(f"{path}: training checkpoint has no {which!r} weights (keys: {sorted(obj)}); "
                                  "use which='ema' or which='model'")
        args = obj.get("args")
        args = vars(args) if isinstance(args, argparse.Namespace) else args
        return _owned(obj[which]), {"format": "dit-train", "which": which, "args": args, "keys": sorted(obj)}
    keys = sorted(obj)[:8] if isinstance(obj, Mapping) else None
    raise CheckpointError(f"{path}: not a DiT checkpoint: expected a dict of tensors or a training checkpoint with "
                          f"'ema'/'model'; found {type(obj).__name__} with keys {keys}")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], DiTConfig | None, dict[str, Any]]:
    with safe_open(path, "pt") as f:
        header = f.metadata() or {}
    sd, sidecar = load_file(path), path.with_suffix(".json")
    if "config" in header:  # written with the weights in one atomic replace: it wins over the sidecar
        cfg = _config(json.loads(header["config"]), path)
        return sd, cfg, {"format": "safetensors", "metadata": json.loads(header.get("metadata", "{}"))}
    if sidecar.exists():
        side = read_json(sidecar)
        cfg = _config(side["config"] if "config" in side else side, sidecar)
        return sd, cfg, {"format": "safetensors", "metadata": side.get("metadata", {})}
    return sd, None, {"format": "safetensors", "metadata": {}}


def _read_diffusers(path: Path, config: DiTConfig | None, overrides: dict[str, Any]):
    if (path / "model_index.json").exists():
        path = path / "transformer"
    dconf, src = read_json(path / CONFIG_NAME), str(path)
    single, index = path / f"{DIFFUSERS_WEIGHTS}.safetensors", path / f"{DIFFUSERS_WEIGHTS}.safetensors.index.json"
    if single.exists():
        sd = load_file(single)
    elif index.exists():
        sd = {}
        for shard in sorted(set(read_json(index)["weight_map"].values())):
            sd.update(load_file(path / shard))
    elif (path / f"{DIFFUSERS_WEIGHTS}.bin").exists():
        sd = _owned(safe_torch_load(path / f"{DIFFUSERS_WEIGHTS}.bin"))
    else:
        raise CheckpointError(f"{path}: diffusers folder without {single.name} (or .bin / sharded index)")
    cfg = config or diffusers_config(dconf, sd, src, **overrides)
    notes = ["diffusers' DiT uses a slightly different timestep embedding (downscale_freq_shift=1) and "
             f"norm_eps={dconf.get('norm_eps', 1e-5)} before the MLP: this model computes the official DiT function"]
    return diffusers_to_official(sd, cfg, src), cfg, {"format": "diffusers", "path": src, "notes": notes}


def read_state_dict(path_or_id: str | os.PathLike, which: str = "ema", config: DiTConfig | None = None,
                    **overrides: Any) -> tuple[dict[str, torch.Tensor], DiTConfig, dict[str, Any]]:
    """Official-layout state dict, its config and info, from any non-LoRA format (nothing built)."""
    path = _resolve(path_or_id)
    fmt, found = detect_format(path), None
    info: dict[str, Any] = {"path": str(path), "which": None, "metadata": {}, "notes": []}
    if fmt == "lora":
        raise CheckpointError(f"{path}: a LoRA checkpoint has no full state dict; use load_lora or load_model")
    if fmt == "dir":
        sd, found = load_file(path / WEIGHTS_NAME), _config(read_json(path / CONFIG_NAME), path / CONFIG_NAME)
        extra = read_json(path / METADATA_NAME) if (path / METADATA_NAME).exists() else {}
        info.update(format="dir", metadata=extra.get("metadata", {}))
    elif fmt == "safetensors":
        sd, found, more = _read_safetensors(path)
        info.update(more)
    elif fmt == "diffusers":
        sd, found, more = _read_diffusers(path, config, overrides)
        info.update(more)
    else:
        sd, more = _read_torch(path, which)
        info.update(more)
        args = info.get("args")
        model_name = args.get("model") if isinstance(args, dict) else None
        if isinstance(model_name, str) and model_name.startswith("SiT-") and config is None and "prediction" not in overrides:
            overrides = {**overrides, "prediction": "velocity"}
            info["notes"].append(f"args.model={model_name!r}: prediction='velocity'")
    sd = strip_prefixes(sd)
    if config is not None:
        cfg = config.replace(**overrides) if overrides else config
    elif found is not None:
        cfg = found.replace(**overrides) if overrides and fmt != "diffusers" else found
    else:
        cfg = infer_config(sd, str(path), **overrides)
    return sd, cfg, info


def load_model(path_or_id: str | os.PathLike, which: str = "ema", config: DiTConfig | None = None,
               **overrides: Any) -> tuple[nn.Module, DiTConfig, dict[str, Any]]:
    """Load any supported checkpoint as ``(model in eval mode, config, info)``.

    ``which`` picks ``"ema"`` or ``"model"`` weights of a training checkpoint (other formats hold
    one set). ``config`` replaces the stored or inferred config; ``overrides`` change fields of it,
    e.g. ``prediction="velocity"`` for a SiT checkpoint, ``num_heads`` for a size not in the
    registry. A LoRA directory gives the peft model and the target config; ``info["base_config"]``
    is the pre-trained one (the guide's, with its own null label).
    """
    path = _resolve(path_or_id)
    if detect_format(path) == "lora":
        if config is not None or overrides:
            raise CheckpointError(f"{path}: a LoRA checkpoint carries its own configs; config/overrides are not applied")
        model, base_cfg, target_cfg, info = load_lora(path)
        return model, target_cfg, info
    sd, cfg, info = read_state_dict(path, which, config, **overrides)
    return build_dit(sd, cfg, str(path)), cfg, info


# ---- writing ----------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, weights: nn.Module | Mapping[str, torch.Tensor], config: DiTConfig,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write our format atomically: a directory, or ``*.safetensors`` + sibling ``*.json``."""
    path, tensors, metadata = Path(path), _cpu_tensors(weights), dict(metadata or {})
    check_state_dict(tensors, config, f"{path} (refusing to save)")
    header = {"format": FORMAT_TAG, "config": config.to_json(), "metadata": json.dumps(metadata, sort_keys=True)}
    described = {"format": FORMAT_TAG, "version": VERSION, "metadata": metadata}
    if path.suffix == ".safetensors":
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        write_json(path.with_suffix(".json"), {**described, "config": config.to_dict()})
        return path
    with atomic_dir(path, _REPLACEABLE) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=header)
        (tmp / CONFIG_NAME).write_text(config.to_json() + "\n")
        (tmp / METADATA_NAME).write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
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
    sd, cfg, info = read_state_dict(src, which, config, **overrides)
    origin = {"path": str(Path(info["path"]).resolve()), "format": info["format"], "which": info["which"],
              "sha256": checkpoint_sha256(info["path"])}
    return save_checkpoint(dst, sd, cfg, {"converted_from": origin, **(metadata or {})})


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


# ---- LoRA -------------------------------------------------------------------------------------

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
    tensors = _cpu_tensors(get_peft_model_state_dict(model, adapter_name=name))
    tensors[TABLE_KEY] = table.detach().cpu().contiguous()
    targets = pc.target_modules if isinstance(pc.target_modules, str) else sorted(pc.target_modules)
    base_abs = base.resolve()
    described = {
        "format": LORA_TAG, "version": VERSION, "metadata": dict(metadata or {}),
        "lora": {"rank": pc.r, "alpha": pc.lora_alpha, "targets": targets, "dropout": pc.lora_dropout},
        "base": {"path": str(base_abs), "relpath": os.path.relpath(base_abs, path.resolve()), "which": base_which,
                 "sha256": base_sha256 or checkpoint_sha256(base)},
        "base_config": dit.config.to_dict(), "target_config": target.to_dict(),
    }
    with atomic_dir(path, _REPLACEABLE) as tmp:
        save_file(tensors, str(tmp / LORA_WEIGHTS_NAME), metadata={"format": LORA_TAG})
        (tmp / LORA_CONFIG_NAME).write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
    return path


def load_lora(path: str | os.PathLike, base: str | os.PathLike | None = None,
              verify_base: bool = True) -> tuple[nn.Module, DiTConfig, DiTConfig, dict[str, Any]]:
    """Rebuild a LoRA model: base DiT from its checkpoint, ``add_lora`` with the saved settings, weights.

    Returns ``(peft model in eval mode, base config, target config, info)``. ``base`` overrides the
    stored base path; the base file's sha256 must match the stored one unless ``verify_base=False``.
    """
    path = Path(path)
    desc_file = path / LORA_CONFIG_NAME
    desc = read_json(desc_file)
    if desc.get("format") != LORA_TAG:
        raise CheckpointError(f"{desc_file}: format {desc.get('format')!r}, expected {LORA_TAG!r}")
    ref = desc["base"]
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
    base_cfg, target_cfg = _config(desc["base_config"], desc_file), _config(desc["target_config"], desc_file)
    net, base_cfg, base_info = load_model(base, which=ref.get("which", "ema"), config=base_cfg)
    if not isinstance(net, DiT):
        raise CheckpointError(f"{desc_file}: base {base} is not a plain DiT checkpoint")
    lora = desc["lora"]
    targets = lora["targets"] if isinstance(lora["targets"], str) else tuple(lora["targets"])
    model = add_lora(net, target_cfg, rank=lora["rank"], alpha=lora["alpha"], targets=targets, dropout=lora["dropout"])
    weights_file = path / LORA_WEIGHTS_NAME
    tensors = load_file(weights_file)
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
    info = {"format": "lora", "path": str(path), "which": None, "metadata": desc.get("metadata", {}), "notes": [],
            "lora": lora, "base": {**ref, "resolved": str(base)}, "base_config": base_cfg, "base_info": base_info}
    return model.eval(), base_cfg, target_cfg, info
