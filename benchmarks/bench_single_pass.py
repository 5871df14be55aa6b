"""Single-pass Domain Guidance (DogFit) vs DoG vs CFG on the embedded benchmark: quality and sampling cost.

One run of the embedded demo setting (shipped animal source, 4 target classes x 50 images, 16 px):

1. the baseline fine-tune (label dropout 0.1, as the demo; ``--baseline`` reuses an existing one);
2. a single-pass fine-tune of the same base, data, steps and lr, whose target carries the DoG offset
   at ``--w`` (late start at ``--start-frac`` of the steps, optional ``--cutoff``, no label dropout as DogFit);
3. per seed replicate: unguided / CFG / DoG samples of the baseline and unguided samples of the
   single-pass model, each timed (wall seconds per image, after a warm-up) and its network evaluations
   counted by the denoisers (not assumed);
4. FID / KID (Inception) and the judge's metrics for every set and one real floor set per replicate,
   the demo's ``resolved`` rule on every pair (single-pass vs DoG, vs CFG, vs unguided; DoG vs CFG).

Differences are reported with their spread and flagged resolved or not; nothing is asserted.

    nice python benchmarks/bench_single_pass.py --out runs/bench-single-pass [--baseline runs/demo/finetune-ld0.1]
        [--samples 100] [--seeds 0,1,2] [--w 1.5] [--finetune-steps 1000] [--start-frac 0.5] [--cutoff 0.6]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domain_guidance.io.atomic import write_json
from domain_guidance.io.images import to_nhwc, to_uint8
from domain_guidance.pipelines.demo import analysis, run
from domain_guidance.pipelines.demo import classifier as judge
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.demo.floors import floor_sets
from domain_guidance.pipelines.demo.scoring import Scorer, inception_features
from domain_guidance.pipelines.generate import GenerationSettings, balanced_labels, load_models
from domain_guidance.pipelines.generate.models import build_denoiser, sample_images

SHOWN = ("fid", "kid", "fd_classifier", "in_domain", "class_match")
PAIRS = ((("single-pass", "unguided"), ("ld0.1", "dog")), (("single-pass", "unguided"), ("ld0.1", "cfg")),
         (("single-pass", "unguided"), ("ld0.1", "unguided")), (("ld0.1", "dog"), ("ld0.1", "cfg")))


def evaluations(den: Any) -> int:
    """Per-sample network evaluations made through a guided denoiser's branches (a shared branch once)."""
    branches = {id(b): b for b in (den.cond, den.uncond) if b is not None}
    return sum(int(getattr(b, "evaluations", 0)) for b in branches.values())


def sample_set(settings: GenerationSettings, models: Any) -> tuple[np.ndarray, float, float]:
    """(uint8 NHWC images, wall seconds per image, network evaluations per image) of one timed set."""
    warm = dataclasses.replace(settings, seeds=settings.seeds[:2], labels=settings.labels[:2])
    sample_images(warm, models)  # warm-up: first-call overheads stay out of the timing
    den = build_denoiser(settings.resolved(models.config.latent), models)
    t0 = time.perf_counter()
    images = sample_images(settings, models, denoiser=den)  # (N, C, H, W) in [-1, 1]
    wall = time.perf_counter() - t0
    n = len(settings.seeds)
    return to_nhwc(to_uint8(images)), wall / n, evaluations(den) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-single-pass")
    p.add_argument("--baseline", default=None, help="existing baseline fine-tune (run dir or checkpoint) to reuse")
    p.add_argument("--samples", type=int, default=100, help="samples per set (the real floors have the same N)")
    p.add_argument("--seeds", default="0,1,2", help="seed replicates")
    p.add_argument("--w", type=float, default=1.5, help="guidance weight of CFG, DoG and the single-pass target")
    p.add_argument("--finetune-steps", type=int, default=None, help="default: the demo's (1000)")
    p.add_argument("--start-frac", type=float, default=0.5, help="late start: offset after this fraction of steps")
    p.add_argument("--cutoff", type=float, default=None, help="offset only below this normalised noise level")
    p.add_argument("--sp-dropout", type=float, default=0.0, help="label dropout of the single-pass fine-tune")
    p.add_argument("--no-fid", action="store_true", help="judge metrics only (no Inception)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", default="animal", help="the demo target (docs/demo.md) [animal: the documented run]")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg = DemoConfig(out=args.out, target=args.target, samples=args.samples, seeds=[int(s) for s in args.seeds.split(",")], w=[args.w],
                     fid=not args.no_fid, progress=False)
    if args.finetune_steps is not None:
        cfg.finetune_steps = args.finetune_steps
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def stage(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        value = fn()
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name}: {seconds[name]} s", flush=True)
        return value

    source = run.ensure_source(cfg, out)
    baseline = ({"checkpoint": args.baseline, "reused": True} if args.baseline else
                stage("baseline fine-tune", lambda: run.finetune(cfg, source["checkpoint"], out, 0.1)))
    sp = {"enabled": True, "w": args.w, "start_step": int(args.start_frac * cfg.finetune_steps), "cutoff": args.cutoff}
    sp_cfg = dataclasses.replace(cfg, train_overrides={"single_pass": sp})
    single = stage("single-pass fine-tune", lambda: run.finetune(sp_cfg, source["checkpoint"], out / "single-pass",
                                                                 args.sp_dropout))
    clf, _ = stage("classifier", lambda: judge.train_classifier(out, run.RESOLUTION, cfg.classifier_epochs,
                                                                cfg.classifier_batch, progress=False, target=cfg.spec))
    ref = run.reference_images(cfg)
    inception = ref_inception = None
    if cfg.fid:
        from domain_guidance.pipelines.metrics import InceptionExtractor

        inception = InceptionExtractor(None, device="cpu")
        ref_inception = inception_features(inception, ref, out / "fid-reference.npz")
    scorer = Scorer(clf, cfg.target_classes, judge.features(clf, judge.uint8_to_input(ref, clf.channels)), inception,
                    ref_inception, cfg.kid_subsets, out / "features", exact_domain=cfg.spec.exact_domain)

    base_models = load_models(baseline["checkpoint"], guide=source["checkpoint"])
    sp_models = load_models(single["checkpoint"])
    entries = [("ld0.1", "unguided", 1.0, base_models), ("ld0.1", "cfg", args.w, base_models),
               ("ld0.1", "dog", args.w, base_models), ("single-pass", "unguided", args.w, sp_models)]
    labels = balanced_labels(cfg.samples, len(cfg.target_classes))
    runs: list[dict[str, Any]] = []

    def sample_and_score() -> None:
        for rep in cfg.seeds:
            seeds = [rep * 100000 + i for i in range(cfg.samples)]
            for ft, method, w, models in entries:
                settings = GenerationSettings(method=method, scale=w, sampler=cfg.sampler, steps=str(cfg.steps),
                                              seeds=seeds, labels=labels)
                images, s_per_img, nfe = sample_set(settings, models)
                runs.append({"finetune": ft, "method": method, "w": w if method != "unguided" else None,
                             "interval": None, "seed": rep, "n": cfg.samples, "wall_s_per_image": s_per_img,
                             "nfe_per_image": nfe, **scorer(images, np.asarray(labels))})
                print(f"[bench] rep {rep} {ft}/{method}: {nfe:.0f} evaluations/image, {1000 * s_per_img:.1f} ms/image",
                      flush=True)

    stage("sampling + scoring", sample_and_score)
    counts = np.bincount(np.asarray(labels), minlength=len(cfg.target_classes)).tolist()
    floors = [{"finetune": None, "method": "real", "w": None, "interval": None, "seed": rep, "n": len(images),
               **scorer(images, real_labels)}
              for rep, (images, real_labels) in zip(cfg.seeds, floor_sets(cfg, ref, counts, run.RESOLUTION))]
    summary = analysis.summarize(runs + floors)
    rows = {(r["finetune"], r["method"]): r for r in summary}
    cost = {}
    for key in rows:
        rs = [r for r in runs if (r["finetune"], r["method"]) == key]
        if rs:
            cost["/".join(key)] = {"nfe_per_image": float(np.mean([r["nfe_per_image"] for r in rs])),
                                   "ms_per_image": 1000 * float(np.mean([r["wall_s_per_image"] for r in rs])),
                                   "ms_per_image_std": 1000 * float(np.std([r["wall_s_per_image"] for r in rs], ddof=1))
                                   if len(rs) > 1 else None}
    cells = [dict(a="/".join(a), b="/".join(b), **c) for a, b in PAIRS for m in analysis.METRICS
             if (c := analysis.compare(rows[a], rows[b], m)) is not None]
    results = {"config": cfg.to_dict(), "single_pass": sp, "sp_label_dropout": args.sp_dropout,
               "baseline": baseline, "single": single, "cost": cost, "summary": summary, "comparisons": cells,
               "resolve_rule": analysis.RULE, "stage_seconds": seconds, "threads": args.threads}
    write_json(out / "bench_single_pass.json", results)

    print(f"\nN = {cfg.samples} per set, {len(cfg.seeds)} seed replicates, w = {args.w}, {cfg.sampler} {cfg.steps} steps")
    head = "setting".ljust(24) + "".join(m.rjust(17) for m in SHOWN) + "   eval/img   ms/img"
    print(head)
    for r in summary:
        key = f"{r['finetune'] or ''}/{r['method']}"
        vals = "".join((f"{r[m]:.4g}+-{r.get(m + '_std') or 0:.2g}" if m in r else "-").rjust(17) for m in SHOWN)
        c = cost.get(key, {})
        print(key.ljust(24) + vals + (f"   {c['nfe_per_image']:8.0f} {c['ms_per_image']:8.1f}" if c else ""))
    print("\ncomparisons (a - b; resolved by the demo's rule):")
    for c in cells:
        print(f"  {c['a']:>22} vs {c['b']:<16} {c['metric']:>14}: {c['diff']:+.4g} "
              f"(pooled std {c['pooled_std'] if c['pooled_std'] is None else round(c['pooled_std'], 4)}) "
              f"{'RESOLVED, better: ' + c['better'] if c['resolved'] else 'not resolved'}")
    print(json.dumps({"results": str(out / "bench_single_pass.json")}))


if __name__ == "__main__":
    main()
