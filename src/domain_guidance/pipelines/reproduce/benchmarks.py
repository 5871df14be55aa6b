"""The seven rows of the paper and the published numbers we print beside ours.

Published numbers are the follow-up work's re-run (DogFit, DiT-XL/2 fine-tuned 24k steps; FID on
10,000 samples, DDPM 50 steps, w = 1.5 on the first 3 of the 4 latent channels as DiT's sampler
guides, dgm-eval with its clean resize against a seeded 10,000-image subset of the real images,
``--nsample 10000``; Food-101 on all 101,000 images). Where a per-dataset number was not published
it is None; the paper's own per-dataset tables were not accessible. docs/protocols.md says where
every field comes from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PUBLISHED_SOURCE = ("follow-up re-run (DogFit): DiT-XL/2, FID-10k, DDPM 50 steps, w=1.5 on latent channels 0-2, "
                    "dgm-eval clean resize vs a seeded 10,000-image subset of the real images (--nsample 10000)")
# What decides a published number (pipelines/reproduce/comparability.py compares a row to it field by field).
PUBLISHED_PROTOCOL = {"eval_protocol": "dgm-eval-clean", "num_samples": 10_000, "sampler": "ddpm", "steps": "50",
                      "scale": 1.5, "channels": 3, "reference": (10_000, 13579),  # (dgm-eval --nsample, its seed)
                      "train_preset": "dit-xl2-imagenet-published"}
# Averages over the follow-up's six targets (FID / FD_DINOv2), same protocol.
PUBLISHED_AVERAGES = {"unguided": {"fid": 19.14, "fd_dinov2": 461.5}, "cfg": {"fid": 14.46, "fd_dinov2": 311.0},
                      "dog": {"fid": 13.09, "fd_dinov2": 245.3}}


@dataclass(frozen=True)
class Benchmark:
    name: str  # also the `dog data prepare` dataset name
    title: str
    num_classes: int
    train_images: int  # official training split (the fine-tuning set and the FID reference)
    published: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> {"fid": value}
    note: str = ""
    published_split: str = "official"  # the images the published run used (comparability.split_of's label)
    published_prepare: dict[str, object] = field(default_factory=dict)  # `dog data prepare` options for that split


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("food101", "Food-101", 101, 75_750, {"unguided": {"fid": 16.75}, "dog": {"fid": 10.85}},
              note="published protocols: all 101,000 images (train + test), as the follow-up's script",
              published_split="all", published_prepare={"train_set": "all"}),
    Benchmark("sun397", "SUN397", 397, 19_850, note="partition 1 by default; the follow-up's 76,128-image split "
                                                  "through `dog data prepare sun397 --split-list ...`",
              published_split="split lists"),
    Benchmark("df20-mini", "DF20-Mini", 182, 32_753),
    Benchmark("caltech101", "Caltech-101", 101, 8_677, {"unguided": {"fid": 30.02}, "dog": {"fid": 23.76}},
              note="no official split: every image but BACKGROUND_Google"),
    Benchmark("cub200", "CUB-200-2011", 200, 5_994, {"unguided": {"fid": 9.35}}),
    Benchmark("artbench10", "ArtBench-10", 10, 50_000, {"unguided": {"fid": 23.36}, "dog": {"fid": 17.30}}),
    Benchmark("stanford-cars", "Stanford Cars", 196, 8_144, {"unguided": {"fid": 16.24}}),
)}


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def describe_benchmarks() -> str:
    """One line per row with the published numbers, and the six-target averages."""
    lines = []
    for b in BENCHMARKS.values():
        pub = ", ".join(f"{m} FID {v['fid']:.2f}" for m, v in b.published.items()) or "no per-dataset number"
        note = f" ({b.note})" if b.note else ""
        lines.append(f"  {b.name:<14} {b.title:<14} {b.num_classes:>3} classes, {b.train_images:>6,} train images; "
                     f"published: {pub}{note}")
    avg = "; ".join(f"{m} FID {v['fid']:.2f} / FD_DINOv2 {v['fd_dinov2']:.1f}" for m, v in PUBLISHED_AVERAGES.items())
    return "\n".join(lines + [f"  six-target averages: {avg}", f"  ({PUBLISHED_SOURCE})"])
