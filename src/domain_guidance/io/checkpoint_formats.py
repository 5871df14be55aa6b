"""State-dict level format knowledge: config inference, key validation, diffusers key mapping.

Pure functions on dicts of tensors (no file access); :mod:`domain_guidance.io.checkpoints` does
the reading and writing.

diffusers' ``DiTTransformer2DModel`` (checked against diffusers 0.42 source) vs official DiT:

- ``pos_embed.proj`` is DiT's ``x_embedder.proj``; its sin-cos position table is a non-persistent
  buffer (not in the file) and equals DiT's ``pos_embed``.
- every block holds its own copy of the timestep MLP and label table
  (``transformer_blocks.{i}.norm1.emb.{timestep_embedder.linear_1,linear_2,class_embedder.embedding_table}``);
  DiT has one ``t_embedder`` / ``y_embedder``. Converted hub weights have identical copies.
- attention is split into ``attn1.to_q/to_k/to_v`` (DiT: one ``qkv``, rows in q, k, v order) and
  ``attn1.to_out.0`` (DiT: ``attn.proj``); the MLP is ``ff.net.0.proj`` / ``ff.net.2``.
- ``norm1.linear`` chunks are shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, the
  same order as DiT's ``adaLN_modulation.1``; ``proj_out_1`` chunks are (shift, scale) like DiT's
  final ``adaLN_modulation.1``; ``proj_out_2`` is ``final_layer.linear``. Weights map 1:1.
- Not weight-expressible, so the two forwards differ slightly on the same weights: diffusers'
  timestep frequencies are ``exp(-ln(1e4) i / (half - 1))`` (``downscale_freq_shift=1``) where
  DiT divides by ``half``; its pre-MLP LayerNorm uses ``norm_eps`` (default 1e-5, DiT 1e-6).
  The converted network computes the official DiT function (the hub weights were converted from
  the official checkpoint), not diffusers' approximation of it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
from torch import nn

from ..core.models.config import SIZES, DiTConfig
from ..core.models.dit import DiT, sincos_pos_embed
from .checkpoint_files import CheckpointError

StateDict = dict[str, torch.Tensor]
_SHOW = 5  # keys listed per kind in an error message


def cpu_tensors(weights: nn.Module | Mapping[str, torch.Tensor]) -> StateDict:
    """Detached, contiguous CPU copies (views where already so) of a module's or state dict's tensors, to save."""
    sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def strip_prefixes(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Drop a ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefix carried by every key."""
    sd = dict(sd)
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _shape(sd: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in sd:
        sample = ", ".join(sorted(sd)[:_SHOW])
        raise CheckpointError(f"{source}: cannot infer the DiT config: key {key!r} is missing (keys found: {sample}, ...)")
    return tuple(sd[key].shape)


def heads_for(depth: int, hidden: int, source: str) -> int:
    """Head count from the size registry: exact (depth, hidden) match, else a hidden-size match."""
    for d, h, heads in SIZES.values():
        if (d, h) == (depth, hidden):
            return heads
    for _, h, heads in SIZES.values():
        if h == hidden:
            return heads
    raise CheckpointError(
        f"{source}: hidden size {hidden} (depth {depth}) is not in the size registry "
        f"{ {k: v[:2] for k, v in SIZES.items()} }; the head count cannot be read from weights: pass num_heads"
    )


def infer_config(sd: Mapping[str, torch.Tensor], source: str = "state dict", **overrides: Any) -> DiTConfig:
    """DiTConfig from the shapes of an official-layout state dict; ``overrides`` win (e.g. prediction)."""
    hidden, in_ch, p, p2 = _shape(sd, "x_embedder.proj.weight", source)
    if p != p2:
        raise CheckpointError(f"{source}: non-square patch {p}x{p2} in x_embedder.proj.weight")
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = len(blocks)
    if blocks != set(range(depth)):
        raise CheckpointError(f"{source}: block indices {sorted(blocks)} are not 0..{depth - 1}")
    fields: dict[str, Any] = {"patch_size": p, "in_channels": in_ch, "hidden_size": hidden, "depth": depth}
    if "num_heads" not in overrides:
        fields["num_heads"] = heads_for(depth, hidden, source)
    if depth:
        fields["mlp_ratio"] = _shape(sd, "blocks.0.mlp.fc1.weight", source)[0] / hidden
    tokens = _shape(sd, "pos_embed", source)[1]
    side = math.isqrt(tokens)
    if side * side == tokens:
        fields["input_size"] = side * p
    elif "input_size" not in overrides:
        raise CheckpointError(f"{source}: pos_embed has {tokens} tokens, not a square grid: pass input_size")
    out_ch = _shape(sd, "final_layer.linear.weight", source)[0] // (p * p)
    if out_ch not in (in_ch, 2 * in_ch):
        raise CheckpointError(f"{source}: final_layer.linear gives {out_ch} channels, expected {in_ch} or {2 * in_ch}")
    fields["learn_sigma"] = out_ch == 2 * in_ch
    rows = _shape(sd, "y_embedder.embedding_table.weight", source)[0]
    null_class = overrides.get("null_class", True)  # DiT: the last row is the null label when present
    fields["num_classes"] = rows - int(null_class)
    fields["class_dropout_prob"] = 0.1 if null_class else 0.0
    fields["w_embed"] = "w_embedder.mlp.0.weight" in sd  # a single-pass model with w as an input
    fields.update(overrides)
    try:
        return DiTConfig(**fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: inferred config {fields} is invalid: {e}") from None


def meta_dit(config: DiTConfig) -> DiT:
    """A DiT with parameters on the meta device (no memory), for shapes and ``assign`` loading."""
    with torch.device("meta"):
        return DiT(config)


def check_state_dict(sd: Mapping[str, torch.Tensor], config: DiTConfig, source: str) -> None:
    """Raise a CheckpointError listing missing, unexpected and mis-shaped keys (expected vs found)."""
    expected = {k: tuple(v.shape) for k, v in meta_dit(config).state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source}: weights do not match the DiT config (depth {config.depth}, hidden {config.hidden_size}, "
             f"patch {config.patch_size}, {config.num_embeddings} label rows, out {config.out_channels} channels):"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): " + ", ".join(f"{k} {list(expected[k])}" for k in missing[:_SHOW]))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(f"{k} {list(sd[k].shape)}" for k in unexpected[:_SHOW]))
    if wrong:
        lines.append(f"  mis-shaped keys ({len(wrong)}): " + ", ".join(
            f"{k} expected {list(expected[k])} found {list(sd[k].shape)}" for k in wrong[:_SHOW]))
    raise CheckpointError("\n".join(lines))


def build_dit(sd: Mapping[str, torch.Tensor], config: DiTConfig, source: str) -> DiT:
    """A DiT in eval mode holding ``sd`` (float tensors cast to float32; no second copy when already fp32)."""
    check_state_dict(sd, config, source)
    net = meta_dit(config)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, assign=True)
    return net.eval()  # eval(): label dropout would otherwise fire


# ---- diffusers DiTTransformer2DModel -------------------------------------------------------------

_DIFFUSERS_DEFAULTS = {"num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": None,
                       "num_layers": 28, "sample_size": 32, "patch_size": 2, "num_embeds_ada_norm": 1000,
                       "norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate", "attention_bias": True,
                       "norm_elementwise_affine": False, "norm_eps": 1e-5}
_TOP = {"pos_embed.proj": "x_embedder.proj", "proj_out_1": "final_layer.adaLN_modulation.1", "proj_out_2": "final_layer.linear"}
_BLOCK = {"norm1.linear": "adaLN_modulation.1", "attn1.to_out.0": "attn.proj", "ff.net.0.proj": "mlp.fc1", "ff.net.2": "mlp.fc2"}
_SHARED = {"norm1.emb.timestep_embedder.linear_1": "t_embedder.mlp.0", "norm1.emb.timestep_embedder.linear_2": "t_embedder.mlp.2",
           "norm1.emb.class_embedder.embedding_table": "y_embedder.embedding_table"}


def _params(name: str) -> tuple[str, ...]:
    return ("weight",) if name.endswith("embedding_table") else ("weight", "bias")


def diffusers_config(dconf: Mapping[str, Any], sd: Mapping[str, torch.Tensor], source: str, **overrides: Any) -> DiTConfig:
    """DiTConfig from a diffusers ``config.json`` (and the label-table rows in its weights)."""
    d = {**_DIFFUSERS_DEFAULTS, **{k: v for k, v in dconf.items() if not k.startswith("_")}}
    if dconf.get("_class_name", "DiTTransformer2DModel") != "DiTTransformer2DModel":
        raise CheckpointError(f"{source}: _class_name {dconf.get('_class_name')!r} is not DiTTransformer2DModel")
    for key, want in (("norm_type", "ada_norm_zero"), ("activation_fn", "gelu-approximate"),
                      ("attention_bias", True), ("norm_elementwise_affine", False)):
        if d[key] != want:
            raise CheckpointError(f"{source}: {key}={d[key]!r} has no DiT equivalent (expected {want!r})")
    hidden, in_ch = d["num_attention_heads"] * d["attention_head_dim"], d["in_channels"]
    out_ch = d["out_channels"] or in_ch
    if out_ch not in (in_ch, 2 * in_ch):
        raise CheckpointError(f"{source}: out_channels {out_ch} is neither in_channels {in_ch} nor twice it")
    rows = _shape(sd, "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight", source)[0]
    null_class = rows == d["num_embeds_ada_norm"] + 1
    fields = dict(input_size=d["sample_size"], patch_size=d["patch_size"], in_channels=in_ch, hidden_size=hidden,
                  depth=d["num_layers"], num_heads=d["num_attention_heads"],
                  mlp_ratio=_shape(sd, "transformer_blocks.0.ff.net.0.proj.weight", source)[0] / hidden,
                  num_classes=d["num_embeds_ada_norm"], null_class=null_class,
                  class_dropout_prob=0.1 if null_class else 0.0, learn_sigma=out_ch == 2 * in_ch)
    fields.update(overrides)
    return DiTConfig(**fields)


def diffusers_to_official(sd: Mapping[str, torch.Tensor], config: DiTConfig, source: str) -> StateDict:
    """Map a DiTTransformer2DModel state dict to official DiT keys (q, k, v fused; embedder copies merged)."""
    rest, out, missing = dict(sd), {}, []

    def take(key: str) -> torch.Tensor | None:
        if key not in rest:
            missing.append(key)
        return rest.pop(key, None)

    for dn, on in _TOP.items():
        for s in _params(dn):
            out[f"{on}.{s}"] = take(f"{dn}.{s}")
    for i in range(config.depth):
        src, dst = f"transformer_blocks.{i}.", f"blocks.{i}."
        for dn, on in _BLOCK.items():
            for s in _params(dn):
                out[f"{dst}{on}.{s}"] = take(f"{src}{dn}.{s}")
        for s in ("weight", "bias"):
            qkv = [take(f"{src}attn1.to_{n}.{s}") for n in "qkv"]
            out[f"{dst}attn.qkv.{s}"] = torch.cat(qkv) if all(t is not None for t in qkv) else None
        for dn, on in _SHARED.items():
            for s in _params(dn):
                t, key = take(f"{src}{dn}.{s}"), f"{on}.{s}"
                if i == 0 or out.get(key) is None:
                    out[key] = t
                elif t is not None and not (t.shape == out[key].shape and torch.equal(t, out[key])):
                    diff = (t - out[key]).abs().max().item() if t.shape == out[key].shape else f"shape {list(t.shape)}"
                    raise CheckpointError(
                        f"{source}: per-block copies of {dn}.{s} disagree (block {i} vs block 0, max |diff| {diff}); "
                        "DiT has one shared embedder, so this model cannot be converted exactly")
    if missing or rest:
        raise CheckpointError(
            f"{source}: not a DiTTransformer2DModel state dict of depth {config.depth}: "
            f"missing keys ({len(missing)}): {missing[:_SHOW]}; unexpected keys ({len(rest)}): {sorted(rest)[:_SHOW]}")
    out["pos_embed"] = sincos_pos_embed(config.hidden_size, *(s // config.patch_size for s in config.grid_hw_pixels))[None]
    return out


def official_to_diffusers(sd: Mapping[str, torch.Tensor], config: DiTConfig) -> StateDict:
    """Inverse of :func:`diffusers_to_official` (embedders copied into every block, qkv split)."""
    out: StateDict = {}
    for dn, on in _TOP.items():
        for s in _params(dn):
            out[f"{dn}.{s}"] = sd[f"{on}.{s}"].clone()
    for i in range(config.depth):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        for maps, prefix in ((_BLOCK, src), (_SHARED, "")):
            for dn, on in maps.items():
                for s in _params(dn):
                    out[f"{dst}{dn}.{s}"] = sd[f"{prefix}{on}.{s}"].clone()
        for s in ("weight", "bias"):
            for n, t in zip("qkv", sd[f"{src}attn.qkv.{s}"].chunk(3)):
                out[f"{dst}attn1.to_{n}.{s}"] = t.clone()
    return out


def diffusers_config_dict(config: DiTConfig) -> dict[str, Any]:
    """diffusers ``config.json`` for a DiT config (its label table always has the null row)."""
    if not config.null_class or config.grid_hw_pixels[0] != config.grid_hw_pixels[1] or config.mlp_ratio != 4:
        raise CheckpointError("diffusers' DiTTransformer2DModel needs a null class row, a square input and mlp_ratio 4")
    return {"_class_name": "DiTTransformer2DModel", "num_attention_heads": config.num_heads,
            "attention_head_dim": config.hidden_size // config.num_heads, "in_channels": config.in_channels,
            "out_channels": config.out_channels, "num_layers": config.depth, "sample_size": config.grid_hw_pixels[0],
            "patch_size": config.patch_size, "num_embeds_ada_norm": config.num_classes, "norm_type": "ada_norm_zero",
            "activation_fn": "gelu-approximate", "attention_bias": True, "norm_elementwise_affine": False, "norm_eps": 1e-6}
