"""``ReproduceConfig``: one paper row = a benchmark + a protocol preset (fine-tune, sampling, evaluation).

Presets (EDM2 style, one line per protocol):

- ``published``: the published recipe (training preset ``dit-xl2-imagenet-published``: DiT-XL/2-256
  from ImageNet, 24,000 steps, global batch 32, AdamW 1e-4, EMA 0.9999, label dropout 0.1), sampling
  unguided / CFG / DoG at w = 1.5 on latent channels 0-2 (DiT's ``forward_with_cfg``) with DDPM 50
  steps (the follow-up's re-run) on 10,000 samples, FID and FD_DINOv2 against a seeded subset of
  10,000 real images (dgm-eval ``--nsample 10000``) under both evaluation protocols; Food-101 on all
  101,000 images (the benchmark's ``published_prepare``).
- ``published-all-channels``: the same guiding all 4 latent channels (not comparable: channels differ).
- ``published-50k``: the same with 50,000 samples (ADM/DiT's count).
- ``published-250``: the same with the release's 250 DDPM steps.
- ``cpu-tiny``: a tiny pixel DiT (training preset ``cpu-tiny``) for tests and a first look on a CPU.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ...io.config_files import ConfigMixin
from .benchmarks import BENCHMARKS

EVAL_PROTOCOLS = ("dgm-eval-clean", "pytorch-fid")
STAGES = ("prepare", "finetune", "sample", "evaluate", "table")


@dataclass
class ReproduceConfig(ConfigMixin):
    """Everything a row depends on; saved as ``reproduce_config.json`` in the output folder."""

    benchmark: str = "food101"
    protocol: str = "published"  # the preset this config started from (recorded)
    source: list[str] = field(default_factory=list)  # downloaded archives / folders (the prepare stage)
    prepare_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"partitions": "Partitions.zip"}
    data: str | None = None  # an already prepared folder (dog data prepare); default OUT/data
    train_split: str = "train"  # fine-tuning set and FID reference: the full real training folder
    reference_max_images: int | None = 10_000  # N: dgm-eval --nsample's seeded subset of N (published); None: all
    reference_seed: int = 13579  # dgm-eval's default seed for that subset
    base: str | None = None  # pre-trained checkpoint (DiT-XL-2-256x256.pt); also the DoG guide
    vae: str | None = None  # local sd-vae-ft-ema folder or hub id (default: the training preset's)
    train_preset: str = "dit-xl2-imagenet-published"
    train: dict[str, Any] = field(default_factory=dict)  # nested TrainConfig overrides (steps, batch_size, ...)
    methods: list[str] = field(default_factory=lambda: ["unguided", "cfg", "dog"])
    scale: float = 1.5
    channels: int | None = 3  # guided latent channels: DiT's sampler guides 0-2 of 4 (published); None: all
    sampler: str = "ddpm"
    steps: str = "50"
    num_samples: int = 10_000
    seed: int = 0  # per-sample seeds seed .. seed + num_samples - 1 (same images on any number of GPUs)
    sample_batch_size: int = 32  # per process
    shard_size: int = 1000
    metrics: list[str] = field(default_factory=lambda: ["fid", "fd_dinov2"])
    eval_protocols: list[str] = field(default_factory=lambda: list(EVAL_PROTOCOLS))
    inception_weights: str | None = None  # default: the FID Inception weights shipped offline
    dinov2_model: str = "facebook/dinov2-large"
    eval_batch_size: int = 50
    fd_method: str = "sqrtm"
    device: str = "auto"

    def __post_init__(self) -> None:
        from ...core.guidance import METHODS

        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark: unknown {self.benchmark!r}; expected one of {sorted(BENCHMARKS)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods: expected some of {list(METHODS)}, got {self.methods}")
        bad = [p for p in self.eval_protocols if p not in EVAL_PROTOCOLS]
        if bad:
            raise ValueError(f"eval_protocols: unknown {bad}; expected some of {list(EVAL_PROTOCOLS)}")
        bad = [m for m in self.metrics if m not in ("fid", "fd_dinov2")]
        if bad or not self.metrics:
            raise ValueError(f"metrics: expected some of ['fid', 'fd_dinov2'], got {self.metrics}")
        for name in ("num_samples", "sample_batch_size", "shard_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if self.reference_max_images is not None and self.reference_max_images < 2:
            raise ValueError(f"reference_max_images: expected None (every image) or >= 2, got "
                             f"{self.reference_max_images}")
        if self.channels is not None and int(self.channels) < 1:
            raise ValueError(f"channels: expected None (every channel) or a count >= 1, got {self.channels}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples: FID needs at least 2 samples, got {self.num_samples}")
        self.scale = float(self.scale)
        self.steps = str(self.steps)
        self.source = [str(s) for s in ([self.source] if isinstance(self.source, str) else self.source)]


_PUBLISHED: dict[str, Any] = {}  # the dataclass defaults are the published protocol
PRESETS: dict[str, dict[str, Any]] = {
    "published": _PUBLISHED,
    "published-all-channels": {"channels": None},
    "published-50k": {"num_samples": 50_000},
    "published-250": {"steps": "250"},
    # Seconds on a CPU: a tiny pixel DiT at 8 px (the base must be a tiny model too, e.g. `dog pretrain
    # --preset cpu-tiny`), 10 fine-tuning steps, 16 samples per method; FID only (no DINOv2 download).
    "cpu-tiny": {"train_preset": "cpu-tiny", "train": {"steps": 10, "batch_size": 8, "ckpt_every": 10,
                                                      "sample_every": 0, "log_every": 5, "tensorboard": False,
                                                      "device": "cpu", "data": {"resolution": 8, "channels": 3}},
                 "sampler": "ddim", "steps": "5", "num_samples": 16, "sample_batch_size": 8, "shard_size": 8,
                 "metrics": ["fid"], "eval_batch_size": 16, "fd_method": "eigh", "device": "cpu"},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def resolve(benchmark: str, protocol: str = "published", overrides: dict[str, Any] | None = None) -> ReproduceConfig:
    """Defaults < the benchmark's published data options (published presets) < preset ``protocol`` <
    ``overrides`` (nested: ``{"train": {"steps": 10}}`` merges)."""
    if protocol not in PRESETS:
        raise KeyError(f"unknown protocol preset {protocol!r}; expected one of {sorted(PRESETS)}")
    start: dict[str, Any] = {"benchmark": benchmark, "protocol": protocol}
    if protocol.startswith("published") and benchmark in BENCHMARKS:  # the images the published run used
        start["prepare_options"] = dict(BENCHMARKS[benchmark].published_prepare)
    values = _merge(_merge(start, PRESETS[protocol]), overrides or {})
    return ReproduceConfig.from_dict(values, source=f"reproduce preset {protocol}")
