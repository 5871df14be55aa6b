"""Whether one of our numbers was made the way the published one was, field by field.

A published number is decided by: the evaluation protocol (resize), the reference rule (which real
images), N, the sampler and its steps, the guidance weight w, the guided latent channels, the
dataset split and the fine-tuning recipe. ``protocol_of`` reads these from what a row actually
used (the samples' settings, the score record, the prepared data's manifest, the resolved
fine-tune config); ``published_protocol`` gives the published values; ``first_difference`` names
the first field that differs (None: comparable). See docs/protocols.md.
"""
from __future__ import annotations

from typing import Any

from ..training import resolve_config
from .benchmarks import PUBLISHED_PROTOCOL, benchmark

# the order in which a difference is reported (the first one that differs is named)
FIELDS = ("eval_protocol", "reference", "num_samples", "sampler", "steps", "w", "channels", "split", "recipe")
# the fine-tune settings that decide the weights (not where or how fast they are computed)
RECIPE_KEYS = ("init", "mode", "base_which", "label_dropout", "lr", "weight_decay", "adam_betas", "adam_eps",
               "batch_size", "steps", "ema.decay", "ema.warmup", "grad_clip", "precision", "data.resolution",
               "data.channels", "data.random_flip", "single_pass.enabled", "single_pass.w", "single_pass.start_step")


def recipe_of(tcfg: Any) -> dict[str, Any]:
    """The recipe fields (RECIPE_KEYS) of a resolved fine-tune config (a TrainConfig)."""
    d = tcfg.to_dict()
    out = {}
    for key in RECIPE_KEYS:
        node: Any = d
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def published_recipe() -> dict[str, Any]:
    """The recipe of the published fine-tune (its preset; the checkpoint and folder do not enter the recipe)."""
    return recipe_of(resolve_config(PUBLISHED_PROTOCOL["train_preset"],
                                    overrides={"base": "DiT-XL-2-256x256.pt", "data": {"dataset": "target"}}))


def split_of(manifest: dict[str, Any] | None, train_split: str) -> str:
    """Which images the fine-tune and the reference came from: ``official``, ``all`` (Food-101 train + test),
    ``partition N`` or ``split lists`` (SUN397), ``unknown`` (a folder without a manifest); ``:SPLIT`` when
    a split other than ``train`` was used."""
    if manifest is None:
        label = "unknown"
    else:
        opts = manifest.get("options") or {}
        if opts.get("train_set") not in (None, "official"):
            label = str(opts["train_set"])
        elif opts.get("split_lists"):
            label = "split lists"
        elif opts.get("partition") is not None:
            label = f"partition {opts['partition']}"
        else:
            label = "official"
    return label if train_split == "train" else f"{label}:{train_split}"


def reference_rule(max_images: int | None, seed: int) -> str:
    """The reference rule as a label: dgm-eval's ``--nsample`` seeded subset, or every image."""
    return "every image" if max_images is None else f"nsample {max_images} seed {seed}"


def reference_label(score: dict[str, Any], split: str) -> str:
    """What a row's reference was, in words (rule and counts)."""
    n, total = score.get("num_reference"), score.get("reference_folder_images")
    rule = reference_rule(score.get("reference_max_images"), score.get("reference_seed", 0))
    return f"{n:,} of {total:,} real images ({split} split; {rule})" if n is not None and total else rule


def protocol_of(score: dict[str, Any], split: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """What a score record was actually made with, as the fields of FIELDS (``split``: split_of of the prepared
    data; ``recipe``: recipe_of the fine-tune's config)."""
    sampling = score["sampling"]
    unguided = sampling.get("method", score.get("method")) == "unguided"
    return {"eval_protocol": score["protocol"],
            "reference": reference_rule(score.get("reference_max_images"), score.get("reference_seed", 0)),
            "num_samples": int(score["num_samples"]), "sampler": sampling["sampler"], "steps": str(sampling["steps"]),
            "w": 1.0 if unguided else float(score["w"]),
            "channels": None if unguided else sampling.get("channels"),  # records before the field: all channels
            "split": split, "recipe": dict(recipe)}


def published_protocol(bench_name: str, method: str) -> dict[str, Any]:
    """The fields of the published number of ``method`` on benchmark ``bench_name``."""
    p = PUBLISHED_PROTOCOL
    unguided = method == "unguided"
    return {"eval_protocol": p["eval_protocol"], "reference": reference_rule(*p["reference"]),
            "num_samples": p["num_samples"], "sampler": p["sampler"], "steps": p["steps"],
            "w": 1.0 if unguided else p["scale"], "channels": None if unguided else p["channels"],
            "split": benchmark(bench_name).published_split, "recipe": published_recipe()}


def _diff(name: str, ours: Any, theirs: Any) -> str:
    if name == "recipe":
        keys = [k for k in RECIPE_KEYS if ours.get(k) != theirs.get(k)]
        return f"recipe ({', '.join(f'{k} {ours.get(k)!r} vs {theirs.get(k)!r}' for k in keys)})"
    if name == "channels":
        ours, theirs = ("all" if v is None else v for v in (ours, theirs))
    return f"{name} ({ours!r} vs published {theirs!r})"


def first_difference(ours: dict[str, Any], published: dict[str, Any]) -> str | None:
    """The first field of FIELDS in which ``ours`` differs from ``published``, in words; None when none does."""
    missing = [f for f in FIELDS if f not in ours or f not in published]
    if missing:
        raise KeyError(f"comparability: fields {missing} missing; expected every one of {list(FIELDS)}")
    for name in FIELDS:
        if ours[name] != published[name]:
            return _diff(name, ours[name], published[name])
    return None


def comparable(ours: dict[str, Any], published: dict[str, Any]) -> bool:
    """Whether a number made under ``ours`` can be set beside the published one (every field equal)."""
    return first_difference(ours, published) is None
