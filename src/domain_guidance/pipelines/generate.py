"""Generate samples at scale: per-sample seeds, resumable shards, any number of processes.

Seed index i (in the requested seed list) always gives the same image and label, whatever the
batch size or process count: shard k holds indices [k*S, (k+1)*S), shards are dealt to ranks
round-robin, each shard is written atomically, and existing valid shards are skipped on resume.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.guidance import GuidedDenoiser
from ..core.sampling import default_steps, sample_from_seeds
from ..io.atomic import write_json
from ..io.distributed import DistInfo, barrier
from ..io.images import save_grid, save_npz, save_png, to_uint8


def parse_seeds(spec: str | list[int]) -> list[int]:
    """"0-99", "1,5,7" or "0-9,100-109" -> list of ints (order kept, duplicates refused)."""
    if isinstance(spec, list):
        seeds = [int(s) for s in spec]
    else:
        seeds = []
        for part in str(spec).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError(f"bad seed range {part!r}: end before start")
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {spec!r}; expected e.g. '0-49999' or '1,2,3'")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seed list has duplicates: each sample needs its own seed")
    return seeds


def balanced_labels(n: int, num_classes: int) -> list[int]:
    """Class-balanced labels: sample i gets class i mod K."""
    return [i % num_classes for i in range(n)]


def parse_labels(spec: str | list[int] | None, n: int, num_classes: int) -> list[int]:
    """Explicit labels (one, or one per seed, comma separated) or class-balanced when None."""
    if spec is None or spec == "":
        return balanced_labels(n, num_classes)
    labels = [int(x) for x in spec.split(",")] if isinstance(spec, str) else [int(x) for x in spec]
    if len(labels) == 1:
        labels = labels * n
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} seeds; give one label or one per seed")
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise ValueError(f"label {bad[0]} out of range: the model has classes 0..{num_classes - 1}")
    return labels


@dataclass
class GenerationSettings:
    """What defines a sample set (recorded next to it)."""

    method: str = "dog"
    scale: float = 1.5
    channels: int | None = None
    interval: tuple[float, float] | None = None
    sampler: str = "ddpm"
    steps: str = "250"
    eta: float = 0.0
    clip_denoised: bool = False
    seeds: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    shard_size: int = 1000
    extra: dict = field(default_factory=dict)  # checkpoints, hashes, VAE...


Decoder = Callable[[torch.Tensor], torch.Tensor]  # model space (N, C, h, w) -> images [-1, 1]


def _shard_path(out: Path, k: int) -> Path:
    return out / "shards" / f"shard-{k:06d}.npz"


def _valid_shard(path: Path, seeds: list[int]) -> bool:
    try:
        with np.load(path) as z:
            return z["seeds"].tolist() == seeds and len(z["arr_0"]) == len(seeds)
    except Exception:  # unreadable or half-written by an old version: regenerate
        return False


def generate(denoiser: GuidedDenoiser, settings: GenerationSettings, shape: tuple[int, ...], out: str | Path,
             decode: Decoder | None = None, batch_size: int = 16, dist: DistInfo = DistInfo(),
             png_dir: bool = False, progress: bool = True) -> dict:
    """Write shards of samples to ``out/shards`` (resumable), then merge on rank 0.

    shape: (C, h, w) of the model space. Returns a summary dict (also written to
    ``out/settings.json``). Only rank 0 merges: ``out/samples.npz`` and ``out/grid.png``.
    """
    out = Path(out)
    seeds, labels = settings.seeds, settings.labels
    if len(seeds) != len(labels):
        raise ValueError(f"{len(seeds)} seeds but {len(labels)} labels")
    n_shards = -(-len(seeds) // settings.shard_size)
    mine = [k for k in range(n_shards) if k % dist.world_size == dist.rank]
    todo = []
    for k in mine:
        s = slice(k * settings.shard_size, (k + 1) * settings.shard_size)
        if not _valid_shard(_shard_path(out, k), seeds[s]):
            todo.append(k)
    n_todo = sum(len(seeds[k * settings.shard_size:(k + 1) * settings.shard_size]) for k in todo)
    bar = tqdm(total=n_todo, unit="img", desc=f"rank {dist.rank} sampling", disable=not progress)
    t0 = time.time()
    for k in todo:
        lo = k * settings.shard_size
        shard_seeds, shard_labels = seeds[lo:lo + settings.shard_size], labels[lo:lo + settings.shard_size]
        images = []
        for b in range(0, len(shard_seeds), batch_size):
            batch_seeds = shard_seeds[b:b + batch_size]
            y = torch.tensor(shard_labels[b:b + batch_size], device=dist.device)
            x = sample_from_seeds(denoiser, batch_seeds, y, shape, device=dist.device, sampler=settings.sampler,
                                  steps=default_steps(settings.sampler, settings.steps), eta=settings.eta,
                                  clip_denoised=settings.clip_denoised,
                                  learn_sigma=denoiser.cond.config.learn_sigma)
            images.append(to_uint8(decode(x) if decode is not None else x).cpu())
            bar.update(len(batch_seeds))
            bar.set_postfix(img_per_s=f"{bar.n / max(time.time() - t0, 1e-9):.2f}")
        images = torch.cat(images)
        if png_dir:
            for img, seed in zip(images, shard_seeds):
                save_png(img, out / "images" / f"{seed:06d}.png")
        save_npz(_shard_path(out, k), images, labels=np.array(shard_labels), seeds=np.array(shard_seeds))
    bar.close()
    barrier(dist)
    summary = {"num_samples": len(seeds), "shards": n_shards, "generated_now": n_todo,
               "seconds": round(time.time() - t0, 3), "settings": asdict(settings)}
    if dist.is_main:
        merge_shards(out, n_shards)
        write_json(out / "settings.json", summary)
    barrier(dist)
    return summary


def merge_shards(out: Path, n_shards: int, grid_size: int = 64) -> Path:
    """Concatenate shards into ``samples.npz`` (arr_0 uint8 NHWC, labels, seeds) and a grid PNG."""
    arrays, labels, seeds = [], [], []
    for k in range(n_shards):
        with np.load(_shard_path(out, k)) as z:
            arrays.append(z["arr_0"])
            labels.append(z["labels"])
            seeds.append(z["seeds"])
    images = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2)
    path = save_npz(out / "samples.npz", images, labels=np.concatenate(labels), seeds=np.concatenate(seeds))
    first = images[:grid_size]
    save_grid(first, out / "grid.png", upscale=max(1, 128 // first.shape[-1]))
    return path


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``samples.npz`` -> (uint8 NHWC images, labels or None)."""
    with np.load(path) as z:
        return z["arr_0"], (z["labels"] if "labels" in z else None)


def settings_json(settings: GenerationSettings) -> str:
    return json.dumps(asdict(settings), indent=2, sort_keys=True)
