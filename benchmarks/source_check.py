"""Criterion (s) of the round-4 regime search (docs/regime-search.md): does CFG measurably improve a
*source* model on its own classes, on marginal FID and KID (FID-Inception features)?

The source is sampled unguided and with CFG at each ``--w``: N images per (setting, seed replicate),
replicate r uses seeds r * 100000 + 0..N-1, labels i mod K (class-balanced). Reference: 100 held-out
test images per source class of the built-in dataset; real floor: ``--replicates`` disjoint sets of N
further test images. (s) is met when at some w both FID and KID are resolved better than unguided:
z = (mean unguided - mean CFG) / pooled std > 2, pooled std = sqrt((s1^2 + s2^2) / 2) (ddof 1).
For RGB glyph sets the exact in-band (blue) rate of every set is reported beside (glyphs.in_hue_band).
Everything is cached under ``--out`` (samples per set, scores in sets.json); a rerun resumes.

    nice .venv/bin/python benchmarks/source_check.py --source runs/glyph-source/checkpoints/latest \
        --dataset glyphs --classes 0-7 --out runs/source-check/g1-ddim25
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domain_guidance.io.atomic import write_json
from domain_guidance.io.data import load_builtin
from domain_guidance.io.data.glyphs import in_hue_band
from domain_guidance.io.fingerprints import fingerprint_weights
from domain_guidance.io.images import to_nhwc, to_uint8
from domain_guidance.pipelines.generate import GenerationSettings, load_models, sample_images
from domain_guidance.pipelines.metrics.frechet import frechet_distance_from_features
from domain_guidance.pipelines.metrics.kid import kid

REF_PER_CLASS = 100


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def real_sets(dataset: str, classes: list[int], n: int, replicates: int, resolution: int
              ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(reference uint8 (100 K, R, R, C), floors: ``replicates`` disjoint class-balanced (images, labels 0..K-1))."""
    ds = load_builtin(dataset, resolution=resolution, classes=classes, split="test")
    images = ds.images if ds.images.ndim == 4 else ds.images[..., None]
    k = len(classes)
    perms = [np.random.default_rng([0, c]).permutation(np.flatnonzero(ds.labels == c)) for c in range(k)]
    ref = np.sort(np.concatenate([p[:REF_PER_CLASS] for p in perms]))
    per = n // k
    if any(len(p) < REF_PER_CLASS + per * replicates for p in perms):
        raise ValueError(f"{dataset}: {REF_PER_CLASS} reference + {replicates} x {per} floor images per class needed, "
                         f"the test split has {min(len(p) for p in perms)}")
    floors = [np.sort(np.concatenate([p[REF_PER_CLASS + r * per:REF_PER_CLASS + (r + 1) * per] for p in perms]))
              for r in range(replicates)]
    return np.ascontiguousarray(images[ref]), [(np.ascontiguousarray(images[f]), ds.labels[f]) for f in floors]


class InceptionScorer:
    """FID and KID of uint8 NHWC image sets against one reference, in FID-Inception features."""

    def __init__(self, reference: np.ndarray, cache: Path | None = None) -> None:
        from domain_guidance.pipelines.metrics.inception import InceptionExtractor

        self.net = InceptionExtractor(None, device="cpu")
        if cache is not None and cache.is_file():
            self.ref = np.load(cache)  # (R, 2048)
        else:
            self.ref = self.features(reference)  # (R, 2048)
            if cache is not None:
                np.save(cache, self.ref)

    def features(self, images: np.ndarray) -> np.ndarray:
        from domain_guidance.pipelines.metrics.stats import compute_stats

        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="only .* images for", category=RuntimeWarning)
            return compute_stats(images, self.net, 50, keep_features=True).features

    def score(self, images: np.ndarray) -> dict[str, float]:
        f = self.features(images)
        k = kid(self.ref, f, n_subsets=100, subset_size=min(len(f), len(self.ref)), seed=0)
        with warnings.catch_warnings():  # FID at N < 2048 is biased: compared at equal N only, as here
            warnings.filterwarnings("ignore", message="only .* images for", category=RuntimeWarning)
            row = {"fid": frechet_distance_from_features(f, self.ref, method="svd"), "kid": float(k["kid_mean"])}
        if images.shape[-1] == 3:
            row["blue_rate"] = float(in_hue_band(images).mean())
        return row


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and std (ddof 1) per metric over replicates."""
    out: dict[str, float] = {}
    for m in rows[0]:
        vals = [r[m] for r in rows]
        out[m], out[f"{m}_std"] = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


def z_better(worse: dict[str, float], better: dict[str, float], metric: str) -> float:
    """(mean worse - mean better) / pooled std: > 2 means 'better' is resolved better (lower)."""
    pooled = math.sqrt((worse[f"{metric}_std"] ** 2 + better[f"{metric}_std"] ** 2) / 2)
    gap = worse[metric] - better[metric]
    return gap / pooled if pooled > 0 else math.copysign(math.inf, gap)


def criterion_s(groups: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per w: z of FID and KID (unguided vs CFG); met when both exceed 2 at some w."""
    per_w = {k: {m: z_better(groups["unguided"], g, m) for m in ("fid", "kid")}
             for k, g in groups.items() if k.startswith("cfg")}
    return {"z": per_w, "met": any(all(z > 2 for z in d.values()) for d in per_w.values())}


def open_check_cache(out: Path, identity: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """(path, records) of a check folder's ``sets.json`` (created empty); a folder holding a check of anything
    else (another model, its weights, sizes, sampler, judge...) is a ValueError naming both identities."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sets.json"
    cache: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if cache and cache.get("identity") != identity:
        raise ValueError(f"{out} holds a check of {cache.get('identity')}, not {identity}: use another --out")
    cache["identity"] = identity
    return path, cache


def parse_classes(text: str) -> list[int]:
    """'0-7' or '0,1,2' -> list of ints."""
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="source checkpoint (run dir, checkpoint dir or file)")
    p.add_argument("--dataset", default="glyphs", help="built-in dataset the source was trained on [glyphs]")
    p.add_argument("--classes", default="0-7", help="source classes, e.g. 0-7 or 0,1,2 [0-7]")
    p.add_argument("--n", type=int, default=320, help="images per (setting, replicate) [320]")
    p.add_argument("--replicates", type=int, default=3, help="seed replicates [3]")
    p.add_argument("--w", type=float, nargs="+", default=[1.25, 1.5, 2.0], help="CFG scales [1.25 1.5 2]")
    p.add_argument("--sampler", default="ddim", help="ddim or ddpm [ddim]")
    p.add_argument("--steps", default="25", help="sampling steps [25]")
    p.add_argument("--out", required=True, help="cache folder (one per source and sampler)")
    p.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    args = p.parse_args(argv)
    classes = parse_classes(args.classes)
    if args.n % len(classes):
        p.error(f"--n must be a multiple of the {len(classes)} classes (class-balanced), got {args.n}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    identity = {"source": str(Path(args.source).resolve()), "source_sha256": fingerprint_weights(args.source),
                "dataset": args.dataset, "classes": classes, "n": args.n,
                "sampler": args.sampler, "steps": args.steps}
    try:
        cache_path, cache = open_check_cache(out, identity)
    except ValueError as e:
        p.error(str(e))
    models = load_models(args.source)
    res = models.config.input_size
    ref, floors = real_sets(args.dataset, classes, args.n, args.replicates, res)
    scorer = InceptionScorer(ref, out / "reference_features.npy")  # the folder's identity is checked above
    rows: dict[str, list[dict[str, float]]] = {"floor": [], "unguided": [], **{f"cfg-w{w:g}": [] for w in args.w}}
    for r, (floor, _) in enumerate(floors):
        key = f"floor/{r}"
        if key not in cache:
            cache[key] = scorer.score(floor)
            write_json(cache_path, cache)
        rows["floor"].append(cache[key])
    labels = (np.arange(args.n) % len(classes)).tolist()
    for method, w in [("unguided", 1.0)] + [("cfg", w) for w in args.w]:
        name = "unguided" if method == "unguided" else f"cfg-w{w:g}"
        for r in range(args.replicates):
            key = f"{name}/{r}"
            if key not in cache:
                t0 = time.perf_counter()
                settings = GenerationSettings(method=method, scale=w, sampler=args.sampler, steps=args.steps,
                                              clip_denoised=True, seeds=[r * 100000 + i for i in range(args.n)],
                                              labels=labels)
                images = to_nhwc(to_uint8(sample_images(settings, models)))  # (N, R, R, C)
                np.savez_compressed(out / f"{name}-seed{r}.npz", images=images)
                t1 = time.perf_counter()
                cache[key] = {**scorer.score(images), "sample_s": round(t1 - t0, 1),
                              "score_s": round(time.perf_counter() - t1, 1)}
                write_json(cache_path, cache)
            rows[name].append({m: v for m, v in cache[key].items() if not m.endswith("_s")})
        _log(f"{name}: " + ", ".join(f"{m}={v:.4g}" for m, v in summarise(rows[name]).items()))
    groups = {k: summarise(v) for k, v in rows.items()}
    result = {"identity": identity, "replicates": args.replicates, "w": args.w, "groups": groups,
              "s": criterion_s(groups)}
    write_json(out / "result.json", result)
    _log(f"(s) met: {result['s']['met']}; z: {json.dumps(result['s']['z'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
