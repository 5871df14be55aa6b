"""Unguided / CFG / DoG over a list of guidance weights: generate, evaluate, tabulate, plot."""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path, write_json
from ..io.config_files import ConfigMixin
from ..io.distributed import DistInfo
from ..io.locks import folder_lock
from .generate import GenerationSettings, generate, load_models, parse_labels
from .metrics import evaluate

# Fields that only choose which rows a sweep draws or how fast: a rerun may change them; every other field
# decides the numbers of the rows (models, seeds, sampler, steps, precision, scoring), so a rerun that changes
# one is refused naming it: its rows would not be comparable with the earlier ones.
ROW_CHOOSERS = ("methods", "scales", "batch_size", "compile")
ONE_METHOD = {"guide": "dog", "autoguide": "autoguidance"}  # decide only that method's rows: free while it has none


@dataclass
class SweepConfig(ConfigMixin):
    model: str
    reference: str
    guide: str | None = None
    autoguide: str | None = None  # autoguidance's guide: a weaker checkpoint of the same classes
    methods: list[str] = field(default_factory=lambda: ["unguided", "cfg", "dog"])
    scales: list[float] = field(default_factory=lambda: [1.5, 2.0, 3.0])
    metrics: list[str] = field(default_factory=lambda: ["fid"])
    seeds: list[int] = field(default_factory=lambda: list(range(1000)))
    sampler: str = "ddpm"
    steps: str = "50"
    batch_size: int = 16
    vae: str | None = None
    prediction: str = "auto"  # what model and guide predict: auto (stored / inferred), eps, velocity (raw SiT)
    inception_weights: str | None = None
    dinov2_model: str = "facebook/dinov2-large"
    fd_method: str = "sqrtm"
    precision: str = "auto"  # sampling arithmetic (part of each run's settings key): auto, fp32, tf32, bf16, fp16
    compile: bool = False  # torch.compile the networks for sampling (not part of the settings)

    def __post_init__(self) -> None:
        from ..core.guidance import METHODS

        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods: expected some of {list(METHODS)}, got {self.methods}")
        if not self.scales or any(not math.isfinite(float(w)) for w in self.scales):
            raise ValueError(f"scales: expected finite guidance weights, got {self.scales}")
        from ..core.precision import PRECISIONS

        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected auto or one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        from .metrics import METRICS

        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"metrics: unknown or none {unknown}; choose from {sorted(METRICS)}")

    def check_before_work(self) -> list[GenerationSettings]:
        """Every run's settings, checked (and the reference found) before any model loads or anything is written."""
        if not Path(self.reference).expanduser().exists():
            raise FileNotFoundError(f"reference {self.reference} does not exist; expected reference images (a folder "
                                    "or .npz) or a statistics .npz")
        return [GenerationSettings(method=method, scale=w, sampler=self.sampler, steps=self.steps, seeds=self.seeds,
                                   precision=self.precision) for method, w in _runs(self)]


def _runs(cfg: SweepConfig) -> list[tuple[str, float]]:
    runs = []
    for method in cfg.methods:
        runs += [(method, 1.0)] if method == "unguided" else [(method, float(w)) for w in cfg.scales]
    return runs


def _previous_rows(out: Path, cfg: SweepConfig, overwrite: bool) -> list[dict]:
    """Rows of an earlier sweep into ``out`` that this one keeps.

    Rows made or scored another way (any field but ``ROW_CHOOSERS``: model, guide, seeds, sampler,
    steps, precision, reference, metrics, extractor...) are refused naming the fields, or with
    ``overwrite`` dropped; otherwise every earlier row stays unless this run redoes its (method, w).
    """
    path = out / "results.json"
    if not path.exists():
        return []
    prev = json.loads(path.read_text())
    defaults = {f.name: f.default for f in fields(SweepConfig) if f.default is not MISSING}
    now = cfg.to_dict()
    old = {**defaults, **{k: v for k, v in prev.get("config", {}).items()}}  # a field added later: its default
    drawn = {r.get("method") for r in prev.get("rows", [])}
    diffs = [f"{k}: {old.get(k)!r} -> {now[k]!r}" for k in now if k not in ROW_CHOOSERS and old.get(k) != now[k]
             and (k not in ONE_METHOD or ONE_METHOD[k] in drawn)]
    if diffs:
        if overwrite:
            return []
        raise ValueError(f"{path} holds rows scored another way ({'; '.join(diffs)}); their numbers would not "
                         "compare with this run's: use another --out, or --overwrite to replace them")
    return list(prev.get("rows", []))


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Earlier rows, with those of the same (method, w) replaced by this run's, in a stable order."""
    key = lambda r: (r["method"], float(r["w"]))  # noqa: E731
    fresh = {key(r) for r in new}
    order = {"unguided": 0, "cfg": 1, "dog": 2, "autoguidance": 3}
    rows = [r for r in old if key(r) not in fresh] + new
    return sorted(rows, key=lambda r: (order.get(r["method"], 9), float(r["w"])))


def run_sweep(cfg: SweepConfig, out: str | Path, dist: DistInfo = DistInfo(), progress: bool = True,
              overwrite: bool = False) -> list[dict]:
    """Generate and score every (method, w); writes ``results.json``, ``table.md`` and plots to ``out``.

    Each run's samples live in ``out/<method>-w<w>/`` and go through ``generate`` (resumable; other
    settings in a used folder are refused unless ``overwrite``). Rows of an earlier sweep into the
    same folder are kept (those of a rerun (method, w) replaced); reference statistics are cached
    in ``out/reference-stats``. ``out`` is locked for the whole sweep: a second sweep into it is refused.
    """
    with folder_lock(out, dist):
        return _sweep_locked(cfg, Path(out), dist, progress, overwrite)


def _sweep_locked(cfg: SweepConfig, out: Path, dist: DistInfo, progress: bool, overwrite: bool) -> list[dict]:
    cfg.check_before_work()
    previous = _previous_rows(out, cfg, overwrite) if dist.is_main else []
    models = load_models(cfg.model, cfg.guide, vae=cfg.vae, device=dist.device, prediction=cfg.prediction,
                         autoguide=cfg.autoguide)
    labels = parse_labels(None, len(cfg.seeds), models.config.num_classes)
    skipped = {m: models.unavailable(m) for m in cfg.methods if models.unavailable(m) is not None}
    if len(skipped) == len(cfg.methods):
        raise ValueError("none of the methods can be drawn with these models: "
                         + "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    if dist.is_main:
        for m, why in skipped.items():  # e.g. a conditional-only fine-tune has no CFG: said, not silently dropped
            print(f"sweep: skipping {m}: {why}", flush=True)
    rows: list[dict[str, Any]] = []
    for method, w in _runs(cfg):
        if method in skipped:
            continue
        run_dir = out / f"{method}-w{w:g}"
        settings = GenerationSettings(method=method, scale=w, sampler=cfg.sampler, steps=cfg.steps,
                                      seeds=cfg.seeds, labels=labels, precision=cfg.precision)
        record = generate(settings, models, run_dir, batch_size=cfg.batch_size, dist=dist, progress=progress,
                          overwrite=overwrite, compile=cfg.compile)
        if not dist.is_main:
            continue
        result = evaluate(run_dir / "samples.npz", cfg.reference, cfg.metrics, inception_weights=cfg.inception_weights,
                          dinov2_model=cfg.dinov2_model, device=str(dist.device), fd_method=cfg.fd_method,
                          reference_cache=out / "reference-stats", output=run_dir / "metrics.json", progress=progress)
        rows.append({"method": method, "w": w, **result["metrics"], "settings_key": record["key"]})
    if dist.is_main:
        rows = merge_rows(previous, rows)
        write_json(out / "results.json", {"config": cfg.to_dict(), "rows": rows, "skipped": skipped})
        write_table(rows, out / "table.md")
        plot_sweep(rows, out)
    return rows


def metric_names(rows: list[dict]) -> list[str]:
    return [k for k in rows[0] if k not in ("method", "w", "settings_key")] if rows else []


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
