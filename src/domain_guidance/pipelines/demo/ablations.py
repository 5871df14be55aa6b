"""The paper's ablations as study options, run on the study's base cell (its fine-tune length and target set).

- ``steps``: every metric against the number of sampling steps, CFG and DoG at ``ablation_w`` (paper Fig. 3).
- ``uncond-guide``: a third guide, the source fine-tuned on the target with label dropout 1 (the null
  label only: a separately trained unconditional model), checkpointed at ``uncond_guide_steps`` and
  used as DoG's guide at each; CFG and DoG beside it (the paper: it degrades as it trains longer).
- ``nine-grid``: CFG | blend | DoG columns, rows w in ``grid_w``, the same seeds in every panel (Fig. 4).

Each ablation's record is saved as ``ablations/<name>.json``; sample sets are cached like the map's.
"""
from __future__ import annotations

import dataclasses
import math
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.guidance import GuidedDenoiser
from ...io.atomic import atomic_path
from ...io.images import to_nhwc, to_uint8
from ..generate import GenerationSettings, balanced_labels, build_denoiser, load_models, sample_images
from ..training.state import complete_checkpoints
from . import analysis
from .blend import BlendedUncond
from .config import DemoConfig
from .heatmap import metric_lines
from .run import finetune, score_floors
from .study_config import StudyConfig
from .workbench import Workbench, seeds_of, set_tag


def _base_finetune(wb: Workbench, cfg: DemoConfig) -> dict[str, Any]:
    """The base cell's fine-tune (label dropout 0.1), the map's own when the map has that cell; resumable."""
    return finetune(cfg, wb.source["checkpoint"], Path(cfg.out), 0.1)


def _compare_rows(summary: list[dict[str, Any]], a: dict[str, Any] | None, b: dict[str, Any] | None,
                  key: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparison cells of rows a vs b on every metric both have, each tagged with ``key``."""
    if a is None or b is None:
        return []
    cells = (analysis.compare(a, b, m) for m in analysis.METRICS)
    return [{**key, "a": a["method"], "b": b["method"], **c} for c in cells if c is not None]


def steps_ablation(wb: Workbench, study: StudyConfig, cfg: DemoConfig) -> dict[str, Any]:
    """CFG and DoG at ``study.ablation_w`` for each of ``study.sampling_steps``, every seed replicate, scored
    with the real floor at the same N; DoG vs CFG per step count with the resolved rule."""
    out = Path(cfg.out)
    w = study.ablation_w
    key = {**cfg.to_dict(), "ablation": "steps", "w": study.ablation_w, "sampling_steps": study.sampling_steps}

    def compute() -> dict[str, Any]:
        ft = _base_finetune(wb, cfg)
        models = load_models(ft["checkpoint"], guide=wb.source["checkpoint"])
        labels = balanced_labels(cfg.samples, models.config.num_classes)
        records = []
        for n in study.sampling_steps:
            for rep in cfg.seeds:
                for method in ("cfg", "dog"):
                    s = GenerationSettings(method=method, scale=study.ablation_w, sampler=cfg.sampler, steps=str(n),
                                           seeds=seeds_of(rep, cfg.samples), labels=labels)
                    # at the map's own step count (and w) this is the map cell's folder: its sets are found there
                    folder = (out / "samples" / set_tag(method, w) / f"seed{rep}" if n == int(cfg.steps) else
                              out / "ablation-steps" / f"{set_tag(method, w)}-steps{n}" / f"seed{rep}")
                    records.append(wb.draw(s, models, folder, {"finetune": f"steps{n}", "sampling_steps": n,
                                                               "method": method, "w": study.ablation_w,
                                                               "interval": None, "seed": rep}))
        runs = wb.score(records)
        floors = score_floors(cfg, out, runs, wb.scorer, wb.ref)
        summary = analysis.summarize(runs + floors)
        cells = [c for n in study.sampling_steps
                 for c in _compare_rows(summary, analysis.find(summary, f"steps{n}", "dog", study.ablation_w),
                                        analysis.find(summary, f"steps{n}", "cfg", study.ablation_w),
                                        {"sampling_steps": n})]
        return {"finetune": ft, "runs": runs, "floors": floors, "summary": summary, "comparisons": cells}

    record = wb.cached(out / "ablations" / "steps.json", key, compute)
    record["plot"] = str(metric_lines(record["summary"], f"CFG and DoG at w={w:g} against sampling steps", _steps_of,
                                      wb.out / "ablation-steps.png", "sampling steps", log_x=True))
    return record


def _steps_of(row: dict[str, Any]) -> float | None:
    ft = row.get("finetune") or ""
    return float(ft[len("steps"):]) if ft.startswith("steps") else None


def uncond_guide_checkpoints(wb: Workbench, study: StudyConfig, cfg: DemoConfig) -> dict[int, str]:
    """Fine-tune the source on the target with label dropout 1 (the null label only) for max(steps), keeping a
    checkpoint at each of ``study.uncond_guide_steps``; {step: checkpoint}. Resumable."""
    wanted = sorted(study.uncond_guide_steps)
    every = reduce(math.gcd, wanted)
    uncond = dataclasses.replace(cfg, finetune_steps=wanted[-1],
                                 train_overrides={**cfg.train_overrides, "ckpt_every": every,
                                                  "keep_last": wanted[-1] // every})
    finetune(uncond, wb.source["checkpoint"], Path(cfg.out), 1.0)
    run_dir = Path(cfg.out) / "finetune-ld1"  # run.finetune's folder for label dropout 1
    found = dict(complete_checkpoints(run_dir))
    missing = [s for s in wanted if s not in found]
    if missing:
        raise FileNotFoundError(f"the unconditional guide run {run_dir} has no "
                                f"checkpoint at step(s) {missing}; expected one at each of {wanted}")
    return {s: str(found[s]) for s in wanted}


def uncond_guide_ablation(wb: Workbench, study: StudyConfig, cfg: DemoConfig) -> dict[str, Any]:
    """CFG, DoG (pre-trained guide) and DoG with the separately fine-tuned unconditional guide at each of its
    checkpoints, at ``study.ablation_w``; each guide checkpoint compared with DoG and with CFG."""
    out = Path(cfg.out)
    w = study.ablation_w
    key = {**cfg.to_dict(), "ablation": "uncond-guide", "w": w, "uncond_guide_steps": study.uncond_guide_steps}

    def compute() -> dict[str, Any]:
        ft = _base_finetune(wb, cfg)
        guides = uncond_guide_checkpoints(wb, study, cfg)
        source = wb.source["checkpoint"]
        choices = [("reference", "cfg", source, None), ("reference", "dog", source, None)]
        choices += [(f"guide{s}", "uncond-guide", path, s) for s, path in guides.items()]
        records = []
        for name, method, guide, guide_steps in choices:
            models = load_models(ft["checkpoint"], guide=guide)
            labels = balanced_labels(cfg.samples, models.config.num_classes)
            for rep in cfg.seeds:
                # the third guide choice is DoG's rule with the unconditional fine-tune as the guide network
                s = GenerationSettings(method="cfg" if method == "cfg" else "dog", scale=w, sampler=cfg.sampler,
                                       steps=str(cfg.steps), seeds=seeds_of(rep, cfg.samples), labels=labels)
                # CFG and DoG are the map cell's own sets (found in its folder when the map drew them)
                folder = (out / "samples" / set_tag(method, w) / f"seed{rep}" if name == "reference" else
                          out / "ablation-uncond-guide" / f"{set_tag(method, w)}-{name}" / f"seed{rep}")
                records.append(wb.draw(s, models, folder, {"finetune": name, "method": method, "w": w,
                                                           "interval": None, "seed": rep, "guide": guide,
                                                           "guide_steps": guide_steps}))
        runs = wb.score(records)
        floors = score_floors(cfg, out, runs, wb.scorer, wb.ref)
        summary = analysis.summarize(runs + floors)
        dog, cfg_row = analysis.find(summary, "reference", "dog", w), analysis.find(summary, "reference", "cfg", w)
        cells = []
        for s in guides:
            row = analysis.find(summary, f"guide{s}", "uncond-guide", w)
            cells += _compare_rows(summary, row, dog, {"guide_steps": s})
            cells += _compare_rows(summary, row, cfg_row, {"guide_steps": s})
        return {"finetune": ft, "guides": {str(s): p for s, p in guides.items()}, "runs": runs, "floors": floors,
                "summary": summary, "comparisons": cells}

    record = wb.cached(out / "ablations" / "uncond-guide.json", key, compute)
    record["plot"] = str(metric_lines(record["summary"], f"DoG with the unconditional fine-tune as guide, w={w:g}",
                                      _guide_steps_of, wb.out / "ablation-uncond-guide.png",
                                      "unconditional guide: training steps"))
    return record


def _guide_steps_of(row: dict[str, Any]) -> float | None:
    ft = row.get("finetune") or ""
    return float(ft[len("guide"):]) if ft.startswith("guide") else None


@torch.no_grad()
def nine_grid(wb: Workbench, study: StudyConfig, cfg: DemoConfig) -> dict[str, Any]:
    """The qualitative grid: columns CFG | blend | DoG, rows ``study.grid_w``, ``study.grid_images`` images per
    panel from the same seeds (0..n-1) and class-balanced labels. Saves ``nine-grid.png`` and ``nine-grid.npz``
    (``images``: uint8 (rows, 3, n, H, W, C), ``w``, ``columns``, ``seeds``, ``labels``)."""
    ft = _base_finetune(wb, cfg)
    models = load_models(ft["checkpoint"], guide=wb.source["checkpoint"])
    n = study.grid_images
    seeds, labels = list(range(n)), balanced_labels(n, models.config.num_classes)
    columns = ("CFG", f"blend ({study.blend:g} fine-tuned + {1 - study.blend:g} pre-trained)", "DoG")
    panels = []
    for w in study.grid_w:
        row = []
        for col in ("cfg", "blend", "dog"):
            s = GenerationSettings(method="dog" if col == "blend" else col, scale=w, sampler=cfg.sampler,
                                   steps=str(cfg.steps), seeds=seeds, labels=labels)
            den = (GuidedDenoiser(models.finetuned, BlendedUncond(models.finetuned, models.guide, study.blend), w)
                   if col == "blend" else build_denoiser(s, models))
            x = sample_images(s, models, denoiser=den)  # (n, C, H, W) in [-1, 1]
            row.append(to_nhwc(to_uint8(x)))  # (n, H, W, C), as generate stores samples
        panels.append(row)
    images = np.stack([np.stack(r) for r in panels])  # (rows, 3, n, H, W, C)
    npz = wb.out / "nine-grid.npz"
    with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=images, w=np.array(study.grid_w), columns=np.array(columns), seeds=np.array(seeds),
                 labels=np.array(labels), blend=study.blend)
    png = _draw_nine_grid(images, study.grid_w, columns, wb.out / "nine-grid.png")
    return {"finetune": ft, "png": str(png), "npz": str(npz), "w": study.grid_w, "columns": list(columns),
            "seeds": seeds, "labels": labels, "blend": study.blend, "sampler": cfg.sampler, "steps": cfg.steps}


def _draw_nine_grid(images: np.ndarray, ws: list[float], columns: tuple[str, ...], path: Path) -> Path:
    """A rows x 3 figure, each panel one row of the panel's images, titled by column and w."""
    from .heatmap import plt_figure, save_figure

    rows, cols, n, h, w_px, c = images.shape
    fig, axes = plt_figure(rows, cols, (1.2 + 0.45 * n * cols, 0.9 + 0.6 * rows))
    for i in range(rows):
        for j in range(cols):
            strip = np.concatenate(list(images[i, j]), axis=1)  # (H, n W, C)
            ax = axes[i][j]
            ax.imshow(strip[..., 0] if c == 1 else strip, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(f"w = {ws[i]:g}", fontsize=8)
    return save_figure(fig, path)
