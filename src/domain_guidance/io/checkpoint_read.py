"""Reading every full-model checkpoint format into an official-layout state dict (nothing built).

Formats (the ``format`` entry of the info dict; :mod:`.checkpoints` documents them for users):
``dir`` and ``safetensors`` (ours), ``dit-raw`` and ``dit-train`` (official ``.pt``), ``diffusers``.
A LoRA directory (``lora``) is detected here and read by :mod:`.lora_checkpoints`.

``which`` ("ema" or "model") picks a weight set where a checkpoint holds both: an official
training ``.pt``, or one of our training checkpoint directories, whose ``model.safetensors``
holds the EMA weights and whose ``train_state.pt`` holds the raw ones. ``info["which"]`` is the
set actually read; None for a file holding one set of unknown kind.

Stored facts win over declarations: a config stored with the weights (ours, diffusers' config.json), the
``args.model`` of a training ``.pt`` (SiT: velocity, DiT: eps) and a ``weights`` entry naming the set
in a file are facts; a ``config`` / override or ``which`` that contradicts one is a CheckpointError naming
both. Only a training initialisation that deliberately re-reads a checkpoint passes ``reinterpret=True``;
the replaced facts are then recorded in ``info["reinterpreted"]``. Inferred fields (shapes) are checked
by the weights themselves; what no file can say (a raw ``.pt``'s prediction) is the caller's to declare.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.models.config import DiTConfig
from .checkpoint_files import (CheckpointError, interrupted_save_hint, load_safetensors, read_json, safe_torch_load,
                               safetensors_header)
from .checkpoint_formats import diffusers_config, diffusers_to_official, infer_config, strip_prefixes

WEIGHTS_NAME, CONFIG_NAME, METADATA_NAME = "model.safetensors", "config.json", "metadata.json"
LORA_CONFIG_NAME, LORA_WEIGHTS_NAME = "lora.json", "lora.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
# A training checkpoint's resume state (written by pipelines/training/state.py, which keeps the same names).
TRAIN_STATE_NAME, TRAIN_STATE_FORMAT = "train_state.pt", "domain_guidance/train_state"
WHICH = ("ema", "model")
FORMAT_VERSION = 1  # of our checkpoint formats (dir, safetensors, lora)
REPLACEABLE = (WEIGHTS_NAME, CONFIG_NAME, METADATA_NAME, LORA_CONFIG_NAME, LORA_WEIGHTS_NAME)  # all a saved dir holds


def owned(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of memory-mapped tensors (an in-place rewrite of the file would otherwise change them)."""
    return {k: v.clone() for k, v in sd.items()}


def parse_config(d: Mapping[str, Any], source: Path | str) -> DiTConfig:
    try:
        return DiTConfig.from_dict(dict(d))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid DiT config: {e}") from None


def check_which(which: str, path: Path | str) -> None:
    if which not in WHICH:
        raise CheckpointError(f"{path}: which={which!r} is not a weight set; expected 'ema' or 'model'")


def resolve_checkpoint(path_or_id: str | os.PathLike) -> Path:
    """An existing checkpoint path; a training run directory means its ``checkpoints/latest``."""
    path = Path(path_or_id).expanduser()
    runs = path / "checkpoints"
    if path.is_dir() and runs.is_dir():
        latest = runs / "latest"
        if latest.is_file() and not latest.is_symlink():  # a text pointer where symlinks fail
            latest = runs / latest.read_text().strip()
        if not latest.is_dir():
            raise CheckpointError(f"{path}: a training run directory without a complete checkpoint "
                                  f"(expected {runs / 'latest'} pointing at one)")
        return latest
    if path.exists():
        return path
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


def pick_set(path: Path, metadata: Mapping[str, Any], which: str, mode: str) -> tuple[str | None, bool]:
    """(weight set that ``which`` gives for a directory of ours, whether it comes from its train_state.pt).

    ``metadata["weights"]`` names the set in the weights file (training checkpoints: "ema"; None
    when unnamed: then that one set is read whatever ``which`` says). The other set is read from
    the training state beside it, and without one a CheckpointError says what the directory holds.
    """
    check_which(which, path)
    stored = metadata.get("weights") if metadata.get("weights") in WHICH else None
    if stored is None or which == stored:
        return stored, False
    if (path / TRAIN_STATE_NAME).is_file():
        return which, True
    files = path.name if path.is_file() else LORA_WEIGHTS_NAME if mode == "lora" else WEIGHTS_NAME
    raise CheckpointError(
        f"{path}: which={which!r} asks for the {'raw (non-EMA)' if which == 'model' else 'EMA'} weights, but this "
        f"checkpoint holds only {stored!r} weights ({files}) and no {TRAIN_STATE_NAME}; use which={stored!r}, "
        f"or a training checkpoint directory that still has its {TRAIN_STATE_NAME}")


def read_train_state_weights(path: Path, which: str, mode: str) -> dict[str, torch.Tensor]:
    """Weight set ``which`` of ``path/train_state.pt`` (weights-only unpickling): a full state dict for
    ``mode="full"``, the trainable LoRA tensors (peft names) for ``mode="lora"``."""
    file = path / TRAIN_STATE_NAME
    state = safe_torch_load(file)
    if not isinstance(state, Mapping) or state.get("format") != TRAIN_STATE_FORMAT:
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(f"{file}: not a training state (expected format {TRAIN_STATE_FORMAT!r}, found {found!r})")
    if state.get("mode", "full") != mode or not isinstance(state.get(which), Mapping):
        raise CheckpointError(f"{file}: expected the {which!r} weights of a {mode!r} run, found mode "
                              f"{state.get('mode')!r} with keys {sorted(state)[:10]}")
    return owned(state[which])


def _read_torch(path: Path, which: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    obj = safe_torch_load(path)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return owned(obj), {"format": "dit-raw"}
    if isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in WHICH):
        if which not in WHICH or not isinstance(obj.get(which), Mapping):
            raise CheckpointError(f"{path}: training checkpoint has no {which!r} weights (keys: {sorted(obj)}); "
                                  "use which='ema' or which='model'")
        args = obj.get("args")
        args = vars(args) if isinstance(args, argparse.Namespace) else args
        return owned(obj[which]), {"format": "dit-train", "which": which, "args": args, "keys": sorted(obj)}
    keys = sorted(obj)[:8] if isinstance(obj, Mapping) else None
    raise CheckpointError(f"{path}: not a DiT checkpoint: expected a dict of tensors or a training checkpoint with "
                          f"'ema'/'model'; found {type(obj).__name__} with keys {keys}")


def _read_safetensors(path: Path, which: str) -> tuple[dict[str, torch.Tensor], DiTConfig | None, dict[str, Any]]:
    header = safetensors_header(path)
    sidecar, cfg, metadata = path.with_suffix(".json"), None, {}
    if "config" in header:  # written with the weights in one atomic replace: it wins over the sidecar
        cfg, metadata = parse_config(json.loads(header["config"]), path), json.loads(header.get("metadata", "{}"))
    elif sidecar.exists():
        side = read_json(sidecar)
        cfg, metadata = parse_config(side["config"] if "config" in side else side, sidecar), side.get("metadata", {})
    got, _ = pick_set(path, metadata, which, "full")  # a named set is a fact: which= may not contradict it
    return load_safetensors(path), cfg, {"format": "safetensors", "which": got, "metadata": metadata}


def _read_dir(path: Path, which: str) -> tuple[dict[str, torch.Tensor], DiTConfig, dict[str, Any]]:
    cfg = parse_config(read_json(path / CONFIG_NAME), path / CONFIG_NAME)
    extra = read_json(path / METADATA_NAME) if (path / METADATA_NAME).exists() else {}
    metadata = extra.get("metadata", {})
    got, from_state = pick_set(path, metadata, which, "full")
    sd = read_train_state_weights(path, which, "full") if from_state else load_safetensors(path / WEIGHTS_NAME)
    return sd, cfg, {"format": "dir", "which": got, "metadata": metadata}


def _read_diffusers(path: Path):
    if (path / "model_index.json").exists():
        path = path / "transformer"
    dconf, src = read_json(path / CONFIG_NAME), str(path)
    single, index = path / f"{DIFFUSERS_WEIGHTS}.safetensors", path / f"{DIFFUSERS_WEIGHTS}.safetensors.index.json"
    if single.exists():
        sd = load_safetensors(single)
    elif index.exists():
        sd = {}
        for shard in sorted(set(read_json(index)["weight_map"].values())):
            sd.update(load_safetensors(path / shard))
    elif (path / f"{DIFFUSERS_WEIGHTS}.bin").exists():
        sd = owned(safe_torch_load(path / f"{DIFFUSERS_WEIGHTS}.bin"))
    else:
        raise CheckpointError(f"{path}: diffusers folder without {single.name} (or .bin / sharded index)")
    notes = ["diffusers' DiT uses a slightly different timestep embedding (downscale_freq_shift=1) and "
             f"norm_eps={dconf.get('norm_eps', 1e-5)} before the MLP: this model computes the official DiT function"]
    return sd, diffusers_config(dconf, sd, src), {"format": "diffusers", "path": src, "notes": notes}


# What each format stores about the model (facts a declaration may not contradict); the rest is inferred.
_DIFFUSERS_FACTS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio",
                    "num_classes", "null_class", "learn_sigma")


def stored_facts(fmt: str, found: DiTConfig | None, args: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The config fields a checkpoint states (normalised as ``DiTConfig.to_dict`` writes them)."""
    if found is not None:
        facts = found.to_dict()
        return {k: facts[k] for k in _DIFFUSERS_FACTS} if fmt == "diffusers" else facts
    model_name = args.get("model") if isinstance(args, dict) else None
    if isinstance(model_name, str) and model_name.startswith(("SiT-", "DiT-")):
        prediction = "velocity" if model_name.startswith("SiT-") else "eps"
        info["notes"].append(f"args.model={model_name!r}: prediction={prediction!r}")
        return {"prediction": prediction}
    return {}


def check_declared(path: Path, facts: Mapping[str, Any], cfg: DiTConfig, reinterpret: bool,
                   info: dict[str, Any]) -> None:
    """Raise a CheckpointError naming each field where ``cfg`` (declared) contradicts a stored fact; with
    ``reinterpret`` record them in ``info["reinterpreted"]`` instead ({field: {"stored", "as"}})."""
    new = cfg.to_dict()
    changed = {k: (v, new[k]) for k, v in facts.items() if k in new and new[k] != v}
    if not changed:
        return
    if not reinterpret:
        said = "; ".join(f"{k}={n!r} was declared, but the checkpoint says {k}={o!r}" for k, (o, n) in changed.items())
        raise CheckpointError(f"{path}: {said}. A stored fact wins: drop the declaration (--prediction auto). "
                              "Only a training initialisation may re-read a checkpoint as something else, and "
                              "says so: base_reinterpret=true")
    info["reinterpreted"] = {k: {"stored": o, "as": n} for k, (o, n) in changed.items()}
    info["notes"].append("reinterpreted (stored -> declared): "
                         + ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in changed.items()))


def read_state_dict(path_or_id: str | os.PathLike, which: str = "ema", config: DiTConfig | None = None,
                    reinterpret: bool = False, **overrides: Any
                    ) -> tuple[dict[str, torch.Tensor], DiTConfig, dict[str, Any]]:
    """Official-layout state dict, its config and info (format, path, which, metadata, notes, ...), from any
    non-LoRA format. ``config`` replaces the stored or inferred config; ``overrides`` change fields of it;
    either may only contradict a stored fact with ``reinterpret=True`` (see the module doc)."""
    path = resolve_checkpoint(path_or_id)
    check_which(which, path)
    fmt, found = detect_format(path), None
    info: dict[str, Any] = {"path": str(path), "which": None, "metadata": {}, "notes": []}
    if fmt == "lora":
        raise CheckpointError(f"{path}: a LoRA checkpoint has no full state dict; use load_lora or load_model")
    if fmt == "dir":
        sd, found, more = _read_dir(path, which)
    elif fmt == "safetensors":
        sd, found, more = _read_safetensors(path, which)
    elif fmt == "diffusers":
        sd, found, more = _read_diffusers(path)
    else:
        sd, more = _read_torch(path, which)
    info.update(more)
    facts = stored_facts(fmt, found, info.get("args"), info)
    sd = strip_prefixes(sd)
    base = config if config is not None else found
    if base is not None:
        cfg = base.replace(**overrides) if overrides else base
    else:
        cfg = infer_config(sd, str(path), **{**facts, **overrides})
    check_declared(path, facts, cfg, reinterpret, info)
    if fmt == "diffusers":
        sd = diffusers_to_official(sd, cfg, info["path"])
    return sd, cfg, info
