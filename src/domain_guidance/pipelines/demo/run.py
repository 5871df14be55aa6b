"""``run_demo``: source model -> target fine-tune -> unguided / CFG / DoG samples -> FID + classifier -> report.

Every stage is cached under ``config.out`` (a rerun resumes), timed, and shown with progress bars.
"""
from __future__ import annotations

import hashlib
import json
import warnings
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ...core.guidance import build_guided_denoiser
from ...io.atomic import atomic_path, write_json
from ...io.data import load_builtin
from ..generate import GenerationSettings, balanced_labels, generate, load_samples
from ..loading import load_denoisers, model_shape
from ..training import find_latest, resolve_config, train
from . import classifier as judge
from .config import DemoConfig
from .report import write_report

RESOLUTION = 16


def _sets(**kv: Any) -> list[str]:
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in kv.items()]


class _Stages:
    """Times named stages and prints each one's wall time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        print(f"[demo] {name} ...", flush=True)
        t0 = time.perf_counter()
        value = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        print(f"[demo] {name}: {self.seconds[name]:.1f} s", flush=True)
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
    exist or holds no checkpoint is an error naming it (a typo must not start a pre-training).
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
        return {"checkpoint": str(ckpt), "trained_now": False, "origin": cfg.source}
    extra = {"model": cfg.model} if cfg.model else {}
    if cfg.model_overrides:
        extra["model_overrides"] = cfg.model_overrides
    tc = resolve_config(cfg.source_preset, sets=_sets(
        out=str(out / "source"), steps=cfg.pretrain_steps, sample_every=0, tensorboard=False,
        progress=cfg.progress, ckpt_every=min(1000, cfg.pretrain_steps), log_every=min(50, cfg.pretrain_steps),
        device="cpu" if not torch.cuda.is_available() else "auto", **extra) + cfg.train_extra)
    result = train(tc, resume=True)
    return {"checkpoint": str(result.checkpoint), "trained_now": True, "origin": cfg.source_preset,
            "steps": result.step, "last_loss": result.last_loss}


def finetune(cfg: DemoConfig, base: str, out: Path, label_dropout: float) -> dict[str, Any]:
    """Full fine-tune of ``base`` on the target classes (``images_per_class`` each); resumable."""
    tc = resolve_config(cfg.target_preset, sets=_sets(
        base=base, out=str(out / f"finetune-ld{label_dropout:g}"), steps=cfg.finetune_steps,
        batch_size=cfg.finetune_batch, label_dropout=label_dropout, sample_every=0, tensorboard=False,
        progress=cfg.progress, ckpt_every=cfg.finetune_steps, log_every=min(50, cfg.finetune_steps),
        **{"data.classes": cfg.target_classes, "data.images_per_class": cfg.images_per_class}) + cfg.train_extra)
    result = train(tc, resume=True)
    return {"checkpoint": str(result.checkpoint), "label_dropout": label_dropout, "steps": result.step,
            "last_loss": result.last_loss}


def reference_images(cfg: DemoConfig) -> np.ndarray:
    """Held-out target test images, uint8 (N, 16, 16, 1), a class-balanced seeded subset if capped."""
    ds = load_builtin("animal-mnist", resolution=RESOLUTION, channels=1, classes=cfg.target_classes, split="test")
    images = ds.images[..., None]
    if cfg.reference_images is not None and cfg.reference_images < len(images):
        rng = np.random.default_rng(0)
        per = -(-cfg.reference_images // len(cfg.target_classes))
        idx = np.concatenate([rng.permutation(np.flatnonzero(ds.labels == k))[:per]
                              for k in range(len(cfg.target_classes))])[:cfg.reference_images]
        images = images[np.sort(idx)]
    return np.ascontiguousarray(images)


def inception_features(extractor: Any, images: np.ndarray, cache: Path | None = None,
                       progress: bool = False) -> np.ndarray:
    """(N, 2048) FID-Inception pool3 features of uint8 NHWC images; cached in ``cache`` if given."""
    from ..metrics.stats import compute_stats

    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if z["n"] == len(images) and z["sha"] == _sha(images):
                return z["features"]
    with warnings.catch_warnings():  # N < 2048 is expected here: FID is compared at equal N only
        warnings.filterwarnings("ignore", message="only .* images for", category=RuntimeWarning)
        feats = compute_stats(images, extractor, 50, keep_features=True, progress=progress).features
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, features=feats, n=len(images), sha=_sha(images))
    return feats


def _sha(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def settings_grid(cfg: DemoConfig) -> list[tuple[str, float]]:
    """(method, w): unguided once, then CFG and DoG at each w."""
    return [("unguided", 1.0)] + [(m, float(w)) for w in cfg.w for m in ("cfg", "dog")]


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole benchmark; writes ``results.json`` and ``report.md`` to ``cfg.out`` and returns the results."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo_config.json", cfg.to_dict())
    stages = _Stages()
    t_all = time.perf_counter()
    source = stages.run("source model", lambda: ensure_source(cfg, out))
    dropouts = [0.1] + ([0.0] if cfg.also_without_dropout else [])
    finetunes = {f"ld{ld:g}": stages.run(f"fine-tune (label dropout {ld:g})",
                                          lambda ld=ld: finetune(cfg, source["checkpoint"], out, ld))
                 for ld in dropouts}
    clf, clf_info = stages.run("classifier", lambda: judge.train_classifier(
        out, RESOLUTION, cfg.classifier_epochs, cfg.classifier_batch, progress=cfg.progress))
    ref = reference_images(cfg)
    ref_feats = judge.features(clf, judge.uint8_to_input(ref))

    def sample_all() -> list[dict[str, Any]]:
        runs = []
        for name, ft_info in finetunes.items():
            ft, guide = load_denoisers(ft_info["checkpoint"], guide=source["checkpoint"])
            shape = model_shape(ft.config)
            labels = balanced_labels(cfg.samples, ft.config.num_classes)
            # a new model or sampler gets new folders: cached samples are never reused across them
            ident = [str(Path(ft_info["checkpoint"]).resolve()), str(Path(source["checkpoint"]).resolve()),
                     cfg.sampler, cfg.steps]
            key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:8]
            for rep in cfg.seeds:
                seeds = [rep * 100000 + i for i in range(cfg.samples)]
                for method, w in settings_grid(cfg):
                    if method == "cfg" and ft.null_label is None:
                        continue
                    run_dir = out / "samples" / f"{name}-{key}" / f"{method}-w{w:g}" / f"seed{rep}"
                    settings = GenerationSettings(method=method, scale=w, sampler=cfg.sampler, steps=str(cfg.steps),
                                                  clip_denoised=True, seeds=seeds, labels=labels,
                                                  extra={"model": ft_info["checkpoint"], "guide": source["checkpoint"]})
                    with torch.no_grad():
                        generate(build_guided_denoiser(method, ft, guide, w), settings, shape, run_dir,
                                 batch_size=cfg.batch_size, progress=cfg.progress)
                    runs.append({"finetune": name, "method": method, "w": w, "seed": rep, "n": cfg.samples,
                                 "samples": str(run_dir / "samples.npz")})
        return runs

    runs = stages.run("sampling", sample_all)

    def score_all() -> None:
        fid_ref = None
        if cfg.fid:
            from ..metrics.inception import InceptionExtractor

            inception = InceptionExtractor(None, device="cpu")
            fid_ref = inception_features(inception, ref, out / "fid-reference.npz", cfg.progress)
        for r in tqdm(runs, desc="scoring", unit="set", disable=not cfg.progress):
            images, labels = load_samples(r["samples"])
            r.update(judge.domain_metrics(clf, images, labels, cfg.target_classes, ref_feats))
            if fid_ref is not None:
                r["fid"] = judge.frechet_from_features(inception_features(inception, images), fid_ref)

    stages.run("evaluation", score_all)
    results = {"config": cfg.to_dict(), "source": source, "finetunes": finetunes, "classifier": clf_info,
               "reference": {"images": len(ref), "classes": cfg.target_classes, "split": "test"},
               "runs": runs, "summary": summarize(runs), "stage_seconds": stages.seconds}
    write_json(out / "results.json", results)
    stages.run("report", lambda: write_report(results, out))
    results["stage_seconds"]["total"] = round(time.perf_counter() - t_all, 2)
    write_json(out / "results.json", results)
    print(f"[demo] total: {results['stage_seconds']['total']:.1f} s; report: {out / 'report.md'}", flush=True)
    return results


METRICS = ("fid", "fd_classifier", "in_domain", "class_match")


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std (over seed replicates) of each metric per (finetune, method, w)."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["finetune"], r["method"], r["w"]), []).append(r)
    rows = []
    for (name, method, w), rs in groups.items():
        row: dict[str, Any] = {"finetune": name, "method": method, "w": w, "replicates": len(rs)}
        for m in METRICS:
            vals = [r[m] for r in rs if m in r]
            if vals:
                row[m] = float(np.mean(vals))
                row[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows
