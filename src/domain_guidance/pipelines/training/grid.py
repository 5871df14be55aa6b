"""Fixed-seed sample grids during training: fine-tuned unguided, CFG and DoG side by side.

Rows are methods, columns are samples; sample ``i`` has seed ``grid.seed + i`` and label
``i mod K`` in every row and at every step, so grids of one run are directly comparable. The
EMA weights are drawn. CFG needs the model's own null label (label dropout > 0); DoG needs a
pre-trained guide (fine-tuning, not pre-training). Rows that are not possible are left out and
the sidecar JSON names the rows.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch

from ...core.denoiser import Denoiser
from ...core.guidance import METHODS
from ...core.sampling import SAMPLERS, get_sampler
from ...io.atomic import write_json
from ...io.images import make_grid, save_grid, to_uint8
from ..generate import GenerationSettings, sample_images
from ..generate import Models as SamplingModels
from .config import GridConfig
from .ema import EMA
from .model import Models


def _pair(models: Models, decode: Any = None) -> SamplingModels:
    """The run's networks as the generation pipeline's models (the guide only when the run has one)."""
    ft = Denoiser(models.net, models.config, adapter=True)  # eval(): no dropout while sampling
    guide = None
    if models.guide_net is not None and models.base_config is not None:
        guide = Denoiser(models.guide_net, models.base_config, adapter=not models.guide_is_adapter_off)
    return SamplingModels(ft, guide, decode, distilled=models.distilled)  # distilled: a w-conditioned model's w


AUTO_SAMPLERS = {"eps": "ddim", "velocity": "ode-heun"}  # grid.sampler "auto", by the model's prediction


def grid_sampler(sampler: str, prediction: str) -> str:
    """The grid's sampler: ``"auto"`` is ddim for eps (DiT) models and ode-heun for velocity (SiT) models."""
    return AUTO_SAMPLERS[prediction] if sampler == "auto" else sampler


def check_grid_sampler(sampler: str, prediction: str) -> None:
    """Refuse, before training starts, a grid sampler that cannot integrate the model's predictions."""
    spec = get_sampler(grid_sampler(sampler, prediction))
    if prediction not in spec.predictions:
        fitting = sorted(name for name, other in SAMPLERS.items() if prediction in other.predictions)
        raise ValueError(f"grid.sampler: {sampler!r} integrates {'/'.join(spec.predictions)} predictions but the model "
                         f"predicts {prediction!r}; set grid.sampler to one of {fitting} (or sample_every=0)")


def grid_methods(models: Models, wanted: list[str]) -> list[str]:
    """The methods of ``wanted`` this run can draw, in order."""
    unknown = [m for m in wanted if m not in METHODS]
    if unknown:
        raise ValueError(f"grid.methods has unknown entries {unknown}; expected unguided, cfg, dog")
    was_training = models.net.training
    try:
        pair = _pair(models)
    finally:
        models.net.train(was_training)
    return [m for m in wanted if pair.unavailable(m) is None]


@torch.no_grad()
def draw_grid(models: Models, ema: EMA | None, grid: GridConfig, path: Path, device: torch.device,
              decode: Any = None, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Sample the grid and save it as a PNG at ``path`` (+ ``.json``); returns (HWC uint8 array, info).

    ``decode`` maps model-space samples to images in [-1, 1] (a VAE's ``decode``; None for pixels).
    """
    cfg = models.config
    sampler = grid_sampler(grid.sampler, cfg.prediction)
    methods = grid_methods(models, list(grid.methods))
    seeds = [grid.seed + i for i in range(grid.num)]
    labels = torch.tensor([i % cfg.num_classes for i in range(grid.num)], dtype=torch.long)
    net, was_training = models.net, models.net.training
    trainable = models.trainable()
    guide_was_training = models.guide_net.training if models.guide_net is not None else False
    rows = []
    try:
        with ema.applied(trainable) if ema is not None else contextlib.nullcontext():
            pair = _pair(models, decode)
            for method in methods:  # the generation pipeline's settings and builder: same images as dog sample
                settings = GenerationSettings(method=method, scale=grid.scale,
                                              sampler=sampler, steps=str(grid.steps), seeds=seeds,
                                              labels=labels.tolist())
                rows.append(sample_images(settings, pair, device=device))  # (num, C, H, W) in [-1, 1]
    finally:
        net.train(was_training)
        if models.guide_net is not None and not models.guide_is_adapter_off:
            models.guide_net.train(guide_was_training)
    images = to_uint8(torch.cat(rows).cpu())  # (rows * num, C, H, W)
    upscale = grid.upscale or max(1, math.ceil(64 / images.shape[-1]))
    save_grid(images, path, nrow=grid.num, upscale=upscale)
    info = {"path": str(path), "rows": methods, "seeds": seeds, "labels": labels.tolist(), "scale": grid.scale,
            "sampler": sampler, "steps": grid.steps, "weights": "ema" if ema is not None else "raw", "step": step}
    write_json(Path(path).with_suffix(".json"), info)
    return make_grid(images, nrow=grid.num), info

