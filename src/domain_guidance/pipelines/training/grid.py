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
from ...core.guidance import build_guided_denoiser
from ...core.sampling import sample_from_seeds
from ...io.atomic import write_json
from ...io.images import make_grid, save_grid, to_uint8
from .config import GridConfig
from .ema import EMA
from .model import Models


def grid_methods(models: Models, wanted: list[str]) -> list[str]:
    """The methods of ``wanted`` this run can draw, in order."""
    possible = {"unguided": True, "cfg": models.config.null_label is not None,
                "dog": models.guide_net is not None and models.base_config is not None
                and models.base_config.null_label is not None}
    unknown = [m for m in wanted if m not in possible]
    if unknown:
        raise ValueError(f"grid.methods has unknown entries {unknown}; expected unguided, cfg, dog")
    return [m for m in wanted if possible[m]]


@torch.no_grad()
def draw_grid(models: Models, ema: EMA | None, grid: GridConfig, path: Path, device: torch.device,
              decode: Any = None, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Sample the grid and save it as a PNG at ``path`` (+ ``.json``); returns (HWC uint8 array, info).

    ``decode`` maps model-space samples to images in [-1, 1] (a VAE's ``decode``; None for pixels).
    """
    cfg = models.config
    methods = grid_methods(models, list(grid.methods))
    seeds = [grid.seed + i for i in range(grid.num)]
    labels = torch.tensor([i % cfg.num_classes for i in range(grid.num)], dtype=torch.long)
    shape = (cfg.in_channels, *cfg.grid_hw_pixels)
    net, was_training = models.net, models.net.training
    trainable = models.trainable()
    guide_was_training = models.guide_net.training if models.guide_net is not None else False
    rows = []
    try:
        with ema.applied(trainable) if ema is not None else contextlib.nullcontext():
            ft = Denoiser(net, cfg, adapter=True)  # eval(): no dropout while sampling
            guide = None
            if "dog" in methods:
                guide = Denoiser(models.guide_net, models.base_config, adapter=not models.guide_is_adapter_off)
            for method in methods:
                den = build_guided_denoiser(method, ft, guide if method == "dog" else None, scale=grid.scale)
                x = sample_from_seeds(den, seeds, labels, shape, device=device, sampler=grid.sampler,
                                      steps=grid.steps, learn_sigma=cfg.learn_sigma, clip_denoised=not cfg.latent)
                rows.append(decode(x) if decode is not None else x.clamp(-1, 1))  # (num, C, H, W)
    finally:
        net.train(was_training)
        if models.guide_net is not None and not models.guide_is_adapter_off:
            models.guide_net.train(guide_was_training)
    images = to_uint8(torch.cat(rows).cpu())  # (rows * num, C, H, W)
    upscale = grid.upscale or max(1, math.ceil(64 / images.shape[-1]))
    save_grid(images, path, nrow=grid.num, upscale=upscale)
    info = {"path": str(path), "rows": methods, "seeds": seeds, "labels": labels.tolist(), "scale": grid.scale,
            "sampler": grid.sampler, "steps": grid.steps, "weights": "ema" if ema is not None else "raw", "step": step}
    write_json(Path(path).with_suffix(".json"), info)
    return make_grid(images, nrow=grid.num), info

