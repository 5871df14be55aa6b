"""Generate samples at scale: per-sample seeds, resumable shards keyed by their settings, any number of processes.

Seed index i (in the requested seed list) always gives the same label and the same image up to float
rounding, whatever the batch size or process count (bit-identical when the batches are the same, as in
a resumed run): shard k holds indices [k*S, (k+1)*S), shards are dealt to ranks
round-robin, each shard is written atomically with the settings key it was made under, and a
rerun skips the shards whose key, seeds and labels match. A folder holding samples made under
other settings (another method, w, sampler, steps, model, guide...) is refused with the fields
that differ, unless ``overwrite`` replaces it: old images are never returned under new settings.
A ``settings.json`` without any image beside it (a run that failed before its first shard) blocks
nothing: the next run, with any settings, replaces it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...core.precision import CompiledModule
from ...core.sampling import check_prediction, get_sampler
from ...io.atomic import write_json
from ...io.distributed import DistInfo, barrier
from ...io.locks import folder_lock
from ...io.images import save_grid, save_npz, save_png, to_uint8
from .models import Models, build_denoiser, compile_models, evaluations_per_image, sample_images, settings_key
from .settings import GenerationSettings

RECORD, MERGED, GRID, SHARDS = "settings.json", "samples.npz", "grid.png", "shards"
FORMAT_TAG = "domain_guidance/samples"
DERIVED = ("metrics.json",)  # results computed from the samples: stale once they are replaced


class SettingsMismatch(ValueError):
    """An output folder holds samples made under other settings."""


def _shard_path(out: Path, k: int) -> Path:
    return out / SHARDS / f"shard-{k:06d}.npz"


def _read_shard_meta(path: Path) -> dict[str, Any] | None:
    """key / seeds / labels of a shard, or None when it is missing, unreadable or half-written."""
    try:
        with np.load(path) as z:
            return {"key": str(z["key"]) if "key" in z else None, "seeds": z["seeds"].tolist(),
                    "labels": z["labels"].tolist(), "n": len(z["arr_0"])}
    except Exception:  # missing, truncated or corrupt: regenerated
        return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def describe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every leaf that differs between two records."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def _identity_record(settings: GenerationSettings, models: Models) -> dict[str, Any]:
    # precision by name even where the key leaves fp32 out, so a refusal says "'bf16' -> 'fp32'"
    return {"settings": {**settings.pixel_fields(), "precision": settings.precision}, "models": models.identity}


def _is_extension(old: list[list[int]], new: list[list[int]]) -> bool:
    return len(old) <= len(new) and new[:len(old)] == old


def _check_folder(out: Path, key: str, identity: dict[str, Any], settings: GenerationSettings) -> None:
    """Refuse a folder whose samples were made under other settings or for another seed list."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder for the samples")
    hint = "use another --out, or --overwrite to replace them"
    record_path = out / RECORD
    if record_path.exists() and _holds_samples(out):  # a record alone (a run refused or failed before its first
        try:                                          # shard) guards nothing: the next run replaces it
            prev = json.loads(record_path.read_text())
            prev_key = prev["key"]
        except (ValueError, KeyError, TypeError):
            raise SettingsMismatch(f"{record_path} was not written by this version of dog sample (no settings key); "
                                   f"{hint}") from None
        if prev_key != key:
            diffs = describe_differences({"settings": prev.get("settings", {}), "models": prev.get("models", {})},
                                         identity)
            diffs = [d for d in diffs if not d.startswith(("settings.seeds", "settings.labels"))]
            diffs.sort(key=lambda d: not d.startswith("settings."))  # the settings first, then the weights' leaves
            raise SettingsMismatch(f"{out} holds samples made with other settings ("
                                   + "; ".join(diffs[:8] or ["settings key differs"])
                                   + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "") + f"): {hint}")
        old = [list(p) for p in zip(prev["settings"].get("seeds", []), prev["settings"].get("labels", []))]
        new = [list(p) for p in zip(settings.seeds, settings.labels)]
        if not _is_extension(old, new):
            raise SettingsMismatch(f"{out} holds samples for another seed/label list ({len(old)} samples, seeds "
                                   f"{old[0][0] if old else '-'}..; requested {len(new)}); a rerun may only extend "
                                   f"the list: {hint}")
    shard_dir = out / SHARDS
    if shard_dir.is_dir():
        for path in sorted(shard_dir.glob("shard-*.npz")):
            meta = _read_shard_meta(path)
            if meta is not None and meta["key"] != key:
                raise SettingsMismatch(f"{path} was made under other settings (or by an older version without a "
                                       f"settings key) than requested: {hint}")


def _holds_samples(out: Path) -> bool:
    """Whether ``out`` holds any image: a readable shard, the merged set or a PNG."""
    shards = out / SHARDS
    return ((out / MERGED).exists() or (out / "images").is_dir() and any((out / "images").glob("*.png"))
            or shards.is_dir() and any(_read_shard_meta(p) is not None for p in shards.glob("shard-*.npz")))


def _clear(out: Path) -> None:
    """Remove what a previous generation left in ``out`` (and results computed from it); nothing else."""
    shutil.rmtree(out / SHARDS, ignore_errors=True)
    shutil.rmtree(out / "images", ignore_errors=True)
    for name in (RECORD, MERGED, GRID, *DERIVED):
        (out / name).unlink(missing_ok=True)


def generate(settings: GenerationSettings, models: Models, out: str | Path, *, batch_size: int = 16,
             shard_size: int = 1000, dist: DistInfo = DistInfo(), png_dir: bool = False, progress: bool = True,
             overwrite: bool = False, compile: bool = False) -> dict[str, Any]:
    """Write shards of samples to ``out/shards`` (resumable), then merge on rank 0; the one generation road.

    Returns the record also written to ``out/settings.json``: the settings, the weights' identity,
    the settings key and counts. Rank 0 also writes ``out/samples.npz`` and ``out/grid.png``.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch size and shard size must be >= 1, got {batch_size} and {shard_size}")
    out = Path(out)
    settings = settings.resolved(models.config.latent, models.device)  # precision auto -> fp32 (CPU) / tf32 (CUDA)
    models, _ = compile_models(models, compile)  # not part of the key: the same arithmetic, traced
    if not settings.labels:
        raise ValueError("settings.labels is empty: give one label per seed (parse_labels / balanced_labels)")
    bad = [y for y in settings.labels if not 0 <= y < models.config.num_classes]
    if bad:
        raise ValueError(f"labels: {bad[0]} is out of range; the model has classes 0..{models.config.num_classes - 1}")
    denoiser = build_denoiser(settings, models)  # refuses an impossible method before anything is written
    check_prediction(get_sampler(settings.sampler), denoiser)  # and a model the sampler cannot integrate
    with folder_lock(out, dist):  # one writer per folder: a second run into it is refused, not mixed in
        key, identity = settings_key(settings, models), _identity_record(settings, models)
        earlier_nfe = _recorded(out / RECORD, key, NFE)  # kept by a rerun that has nothing left to generate
        if not overwrite:
            _check_folder(out, key, identity, settings)
        barrier(dist)
        seeds, labels = settings.seeds, settings.labels
        n_shards = -(-len(seeds) // shard_size)
        record = {"format": FORMAT_TAG, "version": 2, "key": key, "status": "in progress", **identity,
                  "settings": settings.to_dict(), "sources": models.sources, "num_samples": len(seeds),
                  "shard_size": shard_size, "shards": n_shards}
        if dist.is_main:
            if overwrite:
                _clear(out)
            write_json(out / RECORD, record)  # before any shard: a killed run still says what its shards are
        barrier(dist)

        mine = [k for k in range(n_shards) if k % dist.world_size == dist.rank]
        todo = []
        for k in mine:
            lo, hi = k * shard_size, (k + 1) * shard_size
            meta = _read_shard_meta(_shard_path(out, k))
            if meta is None or meta["seeds"] != seeds[lo:hi] or meta["labels"] != labels[lo:hi] or meta["key"] != key:
                todo.append(k)
        n_todo = sum(len(seeds[k * shard_size:(k + 1) * shard_size]) for k in todo)
        bar = tqdm(total=n_todo, unit="img", desc=f"rank {dist.rank} sampling", disable=not progress)
        t0 = time.time()
        for k in todo:
            lo, hi = k * shard_size, (k + 1) * shard_size
            images = []
            for b in range(lo, min(hi, len(seeds)), batch_size):
                part = GenerationSettings.from_dict({**settings.to_dict(), "seeds": seeds[b:min(b + batch_size, hi)],
                                                     "labels": labels[b:min(b + batch_size, hi)]})
                x = sample_images(part, models, denoiser, device=dist.device)  # (n, C, H, W) in [-1, 1]
                images.append(to_uint8(x).cpu())
                bar.update(len(part.seeds))
                bar.set_postfix(img_per_s=f"{bar.n / max(time.time() - t0, 1e-9):.2f}")
            batch = torch.cat(images)
            if png_dir:
                for img, seed in zip(batch, seeds[lo:hi]):
                    save_png(img, out / "images" / f"{seed:06d}.png")
            save_npz(_shard_path(out, k), batch, labels=np.array(labels[lo:hi]), seeds=np.array(seeds[lo:hi]),
                     key=np.array(key))
        bar.close()
        nfe = evaluations_per_image(denoiser, n_todo) if n_todo else earlier_nfe
        barrier(dist)
        record.update(status="complete", generated_now=n_todo, seconds=round(time.time() - t0, 3), **{NFE: nfe})
        if compile:
            record["compile"] = compile_record(denoiser)
        if dist.is_main:
            merge_shards(out, n_shards)
            write_json(out / RECORD, record)
        barrier(dist)
        return record


NFE = "network_evaluations_per_image"  # settings.json: per-sample network calls per image, by branch and total


def _recorded(path: Path, key: str, name: str) -> Any:
    """``name`` from an earlier record of the same settings key (a rerun that generated nothing), else None."""
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return prev.get(name) if isinstance(prev, dict) and prev.get("key") == key else None


def compile_record(denoiser: Any) -> dict[str, Any]:
    """What --compile did: compiled or not, the first call's seconds (tracing + code generation), fallback note."""
    nets = {id(d.net): d.net for d in (denoiser.cond, denoiser.uncond) if d is not None and hasattr(d, "net")}
    mods = [m for m in nets.values() if isinstance(m, CompiledModule)]
    notes = sorted({m.note for m in mods if m.note})
    seconds = [m.compile_seconds for m in mods if m.compile_seconds is not None]
    return {"compiled": bool(mods) and not notes, "first_call_seconds": round(sum(seconds), 3) if seconds else None,
            "note": "; ".join(notes) or None}


def merge_shards(out: Path, n_shards: int, grid_size: int = 64) -> Path:
    """Concatenate shards into ``samples.npz`` (arr_0 uint8 NHWC, labels, seeds) and a grid PNG."""
    arrays, labels, seeds = [], [], []
    for k in range(n_shards):
        with np.load(_shard_path(out, k)) as z:
            arrays.append(z["arr_0"])
            labels.append(z["labels"])
            seeds.append(z["seeds"])
    images = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2)
    path = save_npz(out / MERGED, images, labels=np.concatenate(labels), seeds=np.concatenate(seeds))
    first = images[:grid_size]
    save_grid(first, out / GRID, upscale=max(1, 128 // first.shape[-1]))
    return path


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``samples.npz`` -> (uint8 NHWC images, labels or None)."""
    with np.load(path) as z:
        return z["arr_0"], (z["labels"] if "labels" in z else None)
