"""``run_demo``: source model -> target fine-tune -> unguided / CFG / DoG samples -> FID + classifier -> report.

Every stage is cached under ``config.out`` (a rerun resumes), timed, and shown with progress bars.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ...io.atomic import write_json
from ...io.data import load_builtin
from ...io.locks import folder_lock
from ..generate import GenerationSettings, balanced_labels, generate, load_models, load_samples, settings_key
from ..training import find_latest, resolve_config, train
from . import analysis
from . import classifier as judge
from .config import DemoConfig
from .floors import floor_sets, save_real, target_data_overrides
from .flow import check_source_prediction
from .report import write_report
from .scoring import Scorer, inception_features

RESOLUTION = 16


def _merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the nested dict ``more`` laid over it (sub-dicts merged, not replaced)."""
    out = dict(base)
    for k, v in more.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _Stages:
    """Times named stages (wall and this process's CPU seconds) and prints each one's wall time.

    CPU seconds do not grow when other jobs share the cores: CPU / threads bounds what the stage
    would take on free cores (to estimate the default run's budget on a busy machine).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        print(f"[demo] {name} ...", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        self.cpu_seconds[name] = round(time.process_time() - c0, 2)
        print(f"[demo] {name}: {self.seconds[name]:.1f} s (CPU {self.cpu_seconds[name]:.1f} s)", flush=True)
        return value


def _checkpoint_of(path: Path) -> Path | None:
    """A run dir's latest complete checkpoint, a checkpoint path itself, or None."""
    if (path / "checkpoints").is_dir():
        return find_latest(path)
    if path.is_file() or (path.is_dir() and any(path.iterdir()) and not (path / "log.jsonl").exists()):
        return path
    return None


def ensure_source(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """The checkpoint of ``cfg.source``; with ``cfg.pretrain``, pre-train ``cfg.source_preset`` into ``out/source``.

    Pre-training takes hours on a CPU, so it happens only when asked for: a ``source`` that does not
    exist or holds no checkpoint is an error naming it (a typo must not start a pre-training). The
    source must predict ``cfg.prediction`` (an eps source for the flow variant is refused, and back).
    A model size override (tiny test runs) trains a new network from scratch even where the preset
    starts from a checkpoint (``animal-source-flow`` starts from the eps source's weights).
    """
    if not cfg.pretrain:
        path = Path(cfg.source).expanduser()
        how = (f"pass --pretrain to pre-train the {cfg.source_preset!r} preset into {out / 'source'} on purpose "
               f"({cfg.pretrain_steps} steps)")
        if not path.exists():
            raise FileNotFoundError(f"source model {path} (--source) does not exist; expected a checkpoint file or "
                                    f"directory or a `dog pretrain` run directory; {how}")
        ckpt = _checkpoint_of(path)
        if ckpt is None:
            raise ValueError(f"source model {path} (--source) holds no checkpoint (an empty folder or a run without "
                             f"checkpoints/latest); {how}")
        return {"checkpoint": str(ckpt), "trained_now": False, "origin": cfg.source,
                "prediction": check_source_prediction(ckpt, cfg.prediction)}
    extra: dict[str, Any] = {"model": cfg.model} if cfg.model else {}
    if cfg.model_overrides:
        extra["model_overrides"] = dict(cfg.model_overrides)
    if cfg.model and resolve_config(cfg.source_preset, overrides=cfg.train_overrides).init == "base":
        extra.update(init="scratch", base=None, base_prediction="auto", base_reinterpret=False)
    if cfg.prediction == "velocity" and (cfg.model or cfg.model_overrides):
        extra["model_overrides"] = {**extra.get("model_overrides", {}), "prediction": "velocity"}
    tc = resolve_config(cfg.source_preset, overrides=_merge(dict(
        out=str(out / "source"), steps=cfg.pretrain_steps, sample_every=0, tensorboard=False,
        progress=cfg.progress, ckpt_every=min(1000, cfg.pretrain_steps), log_every=min(50, cfg.pretrain_steps),
        device="cpu" if not torch.cuda.is_available() else "auto", **extra), cfg.train_overrides))
    result = train(tc, resume=True)
    return {"checkpoint": str(result.checkpoint), "trained_now": True, "origin": cfg.source_preset,
            "steps": result.step, "last_loss": result.last_loss,
            "prediction": check_source_prediction(result.checkpoint, cfg.prediction)}


def finetune(cfg: DemoConfig, base: str, out: Path, label_dropout: float) -> dict[str, Any]:
    """Full fine-tune of ``base`` on the target classes (``images_per_class`` each); resumable."""
    tc = resolve_config(cfg.target_preset, overrides=_merge(dict(
        base=base, out=str(out / f"finetune-ld{label_dropout:g}"), steps=cfg.finetune_steps,
        batch_size=cfg.finetune_batch, label_dropout=label_dropout, sample_every=0, tensorboard=False,
        progress=cfg.progress, ckpt_every=cfg.finetune_steps, log_every=min(50, cfg.finetune_steps),
        data=target_data_overrides(cfg), **({"lr": cfg.finetune_lr} if cfg.finetune_lr is not None else {})),
        cfg.train_overrides))
    result = train(tc, resume=True)
    return {"checkpoint": str(result.checkpoint), "label_dropout": label_dropout, "steps": result.step,
            "last_loss": result.last_loss}


def reference_set(cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Held-out target test images, uint8 (N, 16, 16, C), a class-balanced seeded subset if capped,
    and their class indices 0..K-1 (N,)."""
    spec = cfg.spec
    ds = load_builtin(spec.dataset, resolution=RESOLUTION, channels=spec.channels, classes=cfg.target_classes,
                      split="test")
    idx = np.arange(len(ds.labels))
    if cfg.reference_images is not None and cfg.reference_images < len(idx):
        rng = np.random.default_rng(0)
        per = -(-cfg.reference_images // len(cfg.target_classes))
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(ds.labels == k))[:per]
                                      for k in range(len(cfg.target_classes))])[:cfg.reference_images])
    images = ds.images[idx] if ds.images.ndim == 4 else ds.images[idx][..., None]  # (N, 16, 16, C)
    return np.ascontiguousarray(images), np.asarray(ds.labels[idx])


def reference_images(cfg: DemoConfig) -> np.ndarray:
    """The images of ``reference_set``: uint8 (N, 16, 16, C)."""
    return reference_set(cfg)[0]


def _grid_entry(entry: Any) -> tuple[str, float, tuple[float, float] | None]:
    """(method, w, interval or None) of a ``settings_grid`` entry: a (method, w[, interval]) tuple or a dict."""
    if isinstance(entry, dict):
        method, w, interval = entry["method"], entry["w"], entry.get("interval")
    else:
        method, w, interval = (*entry, None)[:3]
    return method, float(w), (tuple(interval) if interval is not None else None)


def settings_grid(cfg: DemoConfig) -> list[dict[str, Any]]:
    """{"method", "w", "interval"} entries: unguided once, then at each w CFG, DoG and (with
    ``cfg.dog_interval``) DoG guided only inside that interval; ``interval`` is None or [lo, hi]."""
    grid: list[dict[str, Any]] = [{"method": "unguided", "w": 1.0, "interval": None}]
    for w in cfg.w:
        grid += [{"method": m, "w": float(w), "interval": None} for m in ("cfg", "dog")]
        if cfg.dog_interval is not None:
            grid.append({"method": "dog", "w": float(w), "interval": [float(t) for t in cfg.dog_interval]})
    return grid


def score_all(cfg: DemoConfig, out: Path, runs: list[dict[str, Any]], clf: judge.SmallCNN,
              ref: np.ndarray, ref_labels: np.ndarray) -> Scorer:
    """Score every sample set in place (judge metrics, marginal and intra-class; FID and KID unless ``cfg.fid``
    is off); returns the scorer."""
    inception = ref_inception = None
    if cfg.fid:
        from ..metrics import InceptionExtractor

        inception = InceptionExtractor(None, device="cpu")
        ref_inception = inception_features(inception, ref, out / "fid-reference.npz", cfg.progress)
    scorer = Scorer(clf, cfg.target_classes, judge.features(clf, judge.uint8_to_input(ref, clf.channels)), inception,
                    ref_inception, cfg.kid_subsets, out / "features", ref_labels, cfg.spec.exact_domain)
    for r in tqdm(runs, desc="scoring", unit="set", disable=not cfg.progress):
        images, labels = load_samples(r["samples"])
        r.update(scorer(images, labels))
    return scorer


def score_floors(cfg: DemoConfig, out: Path, runs: list[dict[str, Any]], scorer: Scorer,
                 ref: np.ndarray) -> list[dict[str, Any]]:
    """One real floor set per seed replicate (see floors.py), same N and class counts as the samples, scored alike."""
    _, labels = load_samples(runs[0]["samples"])
    counts = np.bincount(np.asarray(labels), minlength=len(cfg.target_classes)).tolist()
    floors = []
    for rep, (images, real_labels) in zip(cfg.seeds, floor_sets(cfg, ref, counts, RESOLUTION)):
        path = save_real(out / "floor" / f"real-n{len(images)}-seed{rep}.npz", images, real_labels)
        floors.append({"finetune": None, "method": "real", "w": None, "interval": None, "seed": rep,
                       "n": len(images), "images": path, **scorer(images, real_labels)})
    return floors


def assemble(cfg: DemoConfig, runs: list[dict[str, Any]], floors: list[dict[str, Any]],
             finetunes: dict[str, Any]) -> dict[str, Any]:
    """Summary rows (methods and the real floor), every comparison cell with its resolved flag, regime checks."""
    summary = analysis.summarize(runs + floors)
    return {"summary": summary,
            "comparisons": [c for ft in finetunes for c in analysis.comparisons(summary, ft)],
            "diagnostics": {ft: analysis.diagnostics(summary, ft, len(cfg.target_classes)) for ft in finetunes},
            "resolve_rule": analysis.RULE,
            "workload": {"sample_sets": len(runs), "samples": sum(r["n"] for r in runs),
                         "real_sets": len(floors), "real_images": sum(r["n"] for r in floors)}}


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole benchmark; writes ``results.json`` and ``report.md`` to ``cfg.out`` and returns the results."""
    cfg.validate()
    with folder_lock(cfg.out):  # a second demo into the same --out is refused while this one runs
        return _run_demo_locked(cfg)


def _run_demo_locked(cfg: DemoConfig) -> dict[str, Any]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo_config.json", cfg.to_dict())
    stages = _Stages()
    t_all, c_all = time.perf_counter(), time.process_time()
    source = stages.run("source model", lambda: ensure_source(cfg, out))
    dropouts = [0.1] + ([0.0] if cfg.also_without_dropout else [])
    finetunes = {f"ld{ld:g}": stages.run(f"fine-tune (label dropout {ld:g})",
                                          lambda ld=ld: finetune(cfg, source["checkpoint"], out, ld))
                 for ld in dropouts}
    clf, clf_info = stages.run("classifier", lambda: judge.train_classifier(
        out, RESOLUTION, cfg.classifier_epochs, cfg.classifier_batch, progress=cfg.progress, target=cfg.spec))
    ref, ref_labels = reference_set(cfg)

    def sample_all() -> list[dict[str, Any]]:
        runs = []
        for name, ft_info in finetunes.items():
            models = load_models(ft_info["checkpoint"], guide=source["checkpoint"])
            labels = balanced_labels(cfg.samples, models.config.num_classes)
            for rep in cfg.seeds:
                seeds = [rep * 100000 + i for i in range(cfg.samples)]
                for entry in settings_grid(cfg):
                    method, w, interval = _grid_entry(entry)
                    if models.unavailable(method) is not None:
                        continue  # e.g. no CFG for a fine-tune without label dropout
                    settings = GenerationSettings(method=method, scale=w, interval=interval, sampler=cfg.sampler,
                                                  steps=str(cfg.steps), seeds=seeds, labels=labels)
                    # the folder carries the settings key: a new model, sampler or step count gets new folders
                    tag = f"{method}-w{w:g}" + (f"-i{interval[0]:g}-{interval[1]:g}" if interval else "")
                    run_dir = out / "samples" / name / f"{tag}-{settings_key(settings, models)[:10]}" / f"seed{rep}"
                    generate(settings, models, run_dir, batch_size=cfg.batch_size, progress=cfg.progress)
                    runs.append({"finetune": name, "method": method, "w": w, "interval": list(interval) if interval
                                 else None, "seed": rep, "n": cfg.samples, "samples": str(run_dir / "samples.npz")})
        return runs

    runs = stages.run("sampling", sample_all)

    scorer = stages.run("evaluation", lambda: score_all(cfg, out, runs, clf, ref, ref_labels))
    floors = stages.run("real floors", lambda: score_floors(cfg, out, runs, scorer, ref))
    results = {"config": cfg.to_dict(), "source": source, "finetunes": finetunes, "classifier": clf_info,
               "reference": {"images": len(ref), "classes": cfg.target_classes, "split": "test"},
               "runs": runs, "floors": floors, **assemble(cfg, runs, floors, finetunes),
               "stage_seconds": stages.seconds, "stage_cpu_seconds": stages.cpu_seconds,
               "torch_threads": torch.get_num_threads()}
    write_json(out / "results.json", results)
    stages.run("report", lambda: write_report(results, out))
    results["stage_seconds"]["total"] = round(time.perf_counter() - t_all, 2)
    results["stage_cpu_seconds"]["total"] = round(time.process_time() - c_all, 2)
    write_json(out / "results.json", results)
    print(f"[demo] total: {results['stage_seconds']['total']:.1f} s; report: {out / 'report.md'}", flush=True)
    return results
