"""Unguided / CFG / DoG over a list of guidance weights: generate, evaluate, tabulate, plot."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.guidance import build_guided_denoiser
from ..io.atomic import atomic_path, write_json
from ..io.distributed import DistInfo
from .generate import GenerationSettings, generate, parse_labels
from .loading import load_denoisers, make_decoder, model_shape
from .metrics import evaluate


@dataclass
class SweepConfig:
    model: str
    reference: str
    guide: str | None = None
    methods: list[str] = field(default_factory=lambda: ["unguided", "cfg", "dog"])
    scales: list[float] = field(default_factory=lambda: [1.5, 2.0, 3.0])
    metrics: list[str] = field(default_factory=lambda: ["fid"])
    seeds: list[int] = field(default_factory=lambda: list(range(1000)))
    sampler: str = "ddpm"
    steps: str = "50"
    batch_size: int = 16
    vae: str | None = None
    inception_weights: str | None = None
    dinov2_model: str = "facebook/dinov2-large"
    fd_method: str = "sqrtm"


def _runs(cfg: SweepConfig) -> list[tuple[str, float]]:
    runs = []
    for method in cfg.methods:
        runs += [(method, 1.0)] if method == "unguided" else [(method, float(w)) for w in cfg.scales]
    return runs


def run_sweep(cfg: SweepConfig, out: str | Path, dist: DistInfo = DistInfo(), progress: bool = True) -> list[dict]:
    """Generate and score every (method, w); writes ``results.json``, ``table.md`` and plots to ``out``.

    Each run's samples live in ``out/<method>-w<w>/`` and are resumable like ``dog sample``;
    reference statistics are computed once and cached in ``out/reference-stats``.
    """
    out = Path(out)
    ft, guide = load_denoisers(cfg.model, cfg.guide, device=dist.device)
    decode = make_decoder(ft.config, cfg.vae, device=dist.device)
    labels = parse_labels(None, len(cfg.seeds), ft.config.num_classes)
    rows: list[dict[str, Any]] = []
    for method, w in _runs(cfg):
        if method == "cfg" and ft.null_label is None:
            continue  # a conditional-only fine-tune has no CFG
        run_dir = out / f"{method}-w{w:g}"
        denoiser = build_guided_denoiser(method, ft, guide, w)
        settings = GenerationSettings(method=method, scale=w, sampler=cfg.sampler, steps=cfg.steps,
                                      clip_denoised=not ft.config.latent, seeds=cfg.seeds, labels=labels,
                                      extra={"model": cfg.model, "guide": cfg.guide})
        generate(denoiser, settings, model_shape(ft.config), run_dir, decode, cfg.batch_size, dist,
                 progress=progress)
        if not dist.is_main:
            continue
        result = evaluate(run_dir / "samples.npz", cfg.reference, cfg.metrics, inception_weights=cfg.inception_weights,
                          dinov2_model=cfg.dinov2_model, device=str(dist.device), fd_method=cfg.fd_method,
                          reference_cache=out / "reference-stats", output=run_dir / "metrics.json", progress=progress)
        rows.append({"method": method, "w": w, **result["metrics"]})
    if dist.is_main:
        write_json(out / "results.json", {"config": cfg.__dict__, "rows": rows})
        write_table(rows, out / "table.md")
        plot_sweep(rows, out)
    return rows


def metric_names(rows: list[dict]) -> list[str]:
    return [k for k in rows[0] if k not in ("method", "w")] if rows else []


def write_table(rows: list[dict], path: Path) -> Path:
    """Markdown table, one row per (method, w)."""
    names = metric_names(rows)
    lines = ["| method | w | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['method']} | {r['w']:g} | " + " | ".join(f"{r[n]:.4g}" for n in names) + " |")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def plot_sweep(rows: list[dict], out: Path) -> list[Path]:
    """One PNG per metric: metric against w, a line per guided method, unguided as a level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name in metric_names(rows):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for method in ("cfg", "dog"):
            pts = sorted((r["w"], r[name]) for r in rows if r["method"] == method)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method.upper() if method == "cfg" else "DoG")
        for r in rows:
            if r["method"] == "unguided":
                ax.axhline(r[name], color="gray", linestyle="--", label="unguided")
        ax.set_xlabel("guidance weight w")
        ax.set_ylabel(name)
        ax.legend()
        fig.tight_layout()
        path = out / f"sweep-{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def load_rows(path: str | Path) -> list[dict]:
    return json.loads(Path(path).read_text())["rows"]
