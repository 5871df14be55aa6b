"""Search for a setting of the embedded benchmark (``dog demo``) in the paper's regime (issue 10, item 3).

The regime, fixed before any DoG-vs-CFG comparison (DoG is never sampled here):
 (a) the fine-tune has learned its classes: unguided class match >= ``--min-class-match`` (0.5 with 4
     classes, chance 0.25), shown next to the judge's accuracy on real held-out target images (ceiling);
 (b) samples are measurably worse than the real floor (held-out real target images, disjoint from the
     reference and the fine-tuning set, scored against the reference at the same N): on at least one
     quality metric, mean(unguided) - mean(floor) > 2 pooled std over the seed replicates;
 (c) CFG measurably improves on unguided: mean(unguided) - mean(cfg_w) > 2 pooled std on at least one
     quality metric (KID / FD in the judge's features; FID when ``--fid``) at some w.

Each candidate = (fine-tune steps, lr, images per class, batch). Candidates sharing (lr, images, batch)
share one fine-tune run (constant lr, EMA warm-up by step only: the step-s checkpoint of a longer run is
the s-step run), resumed to the longest length asked. Everything is cached under ``--out``: the judge
(``classifier.pt``), each fine-tune (``train-<key>/``), each candidate's samples and metrics
(``cand-<name>/``, a FRESH folder per candidate) and its result (``cand-<name>/result.json``).
A rerun resumes. ``--summary`` prints the markdown tables of every cached result.

    nice -n 10 .venv/bin/python benchmarks/regime_search.py --only s500-lr1e-4-ipc50,s1500-lr1e-4-ipc50
    .venv/bin/python benchmarks/regime_search.py --fid s3000-lr3e-4-ipc50   # FID-Inception for finals
    .venv/bin/python benchmarks/regime_search.py --summary
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domain_guidance.io.atomic import write_json
from domain_guidance.io.data import load_builtin
from domain_guidance.io.images import to_nhwc, to_uint8
from domain_guidance.pipelines.demo.config import default_source
from domain_guidance.pipelines.generate import GenerationSettings, load_models, sample_images
from domain_guidance.pipelines.training import resolve_config, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _regime_sets import RES, TARGET, Scorer, floor_sets  # noqa: E402

SOURCE_CLASSES = [0, 1, 2, 3, 4, 5]
# pseudo-candidate: the shipped source model on its own classes (reference: 100 test images per class;
# floors from its train split, which it was trained on), to see whether CFG improves quality there at all
SOURCE_CHECK = "source"
# lower is better; intra_*: per-class version (samples asked for class k vs reference images of class k,
# mean over classes; metrics.intra_class), added in round 3 (see docs/regime-search.md)
QUALITY = ("kid_judge", "fd_judge", "fid", "intra_kid_judge", "intra_fd_judge", "intra_fid")
INTRA = ("intra_kid_judge", "intra_fd_judge")  # judge-feature ones (cheap; always computed)
ALL_METRICS = ("class_match", "in_domain") + QUALITY

# name -> (steps, lr, images_per_class, batch), in the order they are tried by default
CANDIDATES: dict[str, tuple[int, float, int, int]] = {
    "s500-lr1e-4-ipc50": (500, 1e-4, 50, 32),  # the demo default today (issue 10's numbers)
    "s1500-lr1e-4-ipc50": (1500, 1e-4, 50, 32),
    "s3000-lr1e-4-ipc50": (3000, 1e-4, 50, 32),
    "s500-lr3e-4-ipc50": (500, 3e-4, 50, 32),
    "s1000-lr3e-4-ipc50": (1000, 3e-4, 50, 32),
    "s1500-lr3e-4-ipc50": (1500, 3e-4, 50, 32),
    "s3000-lr3e-4-ipc50": (3000, 3e-4, 50, 32),
    "s500-lr3e-4-ipc200": (500, 3e-4, 200, 32),
    "s3000-lr3e-4-ipc200": (3000, 3e-4, 200, 32),
    "s3000-lr1e-4-ipc200": (3000, 1e-4, 200, 32),
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _train_key(lr: float, ipc: int, batch: int) -> str:
    return f"lr{lr:g}-ipc{ipc}-b{batch}"


def finetune_to(out: Path, steps: int, lr: float, ipc: int, batch: int, source: str) -> Path:
    """The step-``steps`` checkpoint of the shared fine-tune run for (lr, ipc, batch); trains/resumes as needed."""
    run = out / f"train-{_train_key(lr, ipc, batch)}"
    ckpt = run / "checkpoints" / f"step_{steps:07d}"
    if (ckpt / "train_state.pt").is_file():
        return ckpt
    sets = {"base": source, "out": str(run), "steps": steps, "lr": lr, "batch_size": batch, "label_dropout": 0.1,
            "sample_every": 0, "tensorboard": False, "progress": False, "ckpt_every": 500, "keep_last": 100,
            "log_every": 20, "device": "cpu", "data.classes": TARGET, "data.images_per_class": ipc}
    tc = resolve_config("animal-target", sets=[f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                                               for k, v in sets.items()])
    result = train(tc, resume=True)
    if not (ckpt / "train_state.pt").is_file():
        raise RuntimeError(f"fine-tune to {steps} steps ended at {result.step} without {ckpt}")
    return ckpt


def _missing(row: dict[str, Any], fid: bool, judge_id: str) -> bool:
    """Must a cached row be (re)scored: another judge, round-3 intra-class metrics or FID (when asked) missing?"""
    return (row.get("judge") != judge_id or any(m not in row for m in INTRA)
            or (fid and any(m not in row for m in ("fid", "intra_fid"))))


def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof 1) per metric over replicates."""
    out: dict[str, Any] = {"replicates": len(rows)}
    for m in ALL_METRICS:
        vals = [r[m] for r in rows if m in r]
        if len(vals) == len(rows) and vals:
            out[m] = float(np.mean(vals))
            out[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


def separation(worse: dict[str, Any], better: dict[str, Any], metric: str) -> dict[str, float] | None:
    """gap = mean(worse) - mean(better), pooled std sqrt((s1^2 + s2^2) / 2), z = gap / pooled."""
    if metric not in worse or metric not in better:
        return None
    gap = worse[metric] - better[metric]
    pooled = math.sqrt((worse[f"{metric}_std"] ** 2 + better[f"{metric}_std"] ** 2) / 2)
    return {"gap": gap, "pooled_std": pooled, "z": gap / pooled if pooled > 0 else math.inf * np.sign(gap)}


def criteria(groups: dict[str, dict[str, Any]], ceiling: float, min_cm: float, n_classes: int = len(TARGET)
             ) -> dict[str, Any]:
    ung, floor = groups["unguided"], groups["floor"]
    a = {"unguided_class_match": ung["class_match"], "std": ung["class_match_std"], "ceiling": ceiling,
         "chance": 1 / n_classes, "threshold": min_cm, "met": ung["class_match"] >= min_cm}
    b_sep = {m: separation(ung, floor, m) for m in QUALITY if separation(ung, floor, m)}
    b = {"unguided_vs_floor": b_sep, "met": any(s["z"] > 2 for s in b_sep.values())}
    cfgs = [k for k in groups if k.startswith("cfg")]
    c_sep = {k: {m: separation(ung, groups[k], m) for m in QUALITY if separation(ung, groups[k], m)} for k in cfgs}
    for k in cfgs:  # headroom: the CFG samples themselves stay worse than real images
        b.setdefault("cfg_vs_floor", {})[k] = {m: separation(groups[k], floor, m) for m in QUALITY
                                               if separation(groups[k], floor, m)}
    c = {"unguided_vs_cfg": c_sep,
         "met": any(s["z"] > 2 for per in c_sep.values() for s in per.values()) if cfgs else None}
    return {"a": a, "b": b, "c": c, "all_met": bool(a["met"] and b["met"] and c["met"])}


def run_candidate(name: str, args: argparse.Namespace, scorer: Scorer, floor: list[dict[str, Any]],
                  ceiling: float) -> dict[str, Any]:
    cdir = Path(args.out) / (f"cand-{name}" if args.n == 100 else f"cand-{name}-n{args.n}")
    cdir.mkdir(parents=True, exist_ok=True)
    partial_path = cdir / "sets.json"
    partial: dict[str, Any] = json.loads(partial_path.read_text()) if partial_path.is_file() else {}
    timing: dict[str, float] = partial.pop("_seconds", {})
    t0 = time.perf_counter()
    if name == SOURCE_CHECK:  # the source model on its own classes: does CFG help it there?
        steps, lr, ipc, batch = 0, 0.0, 0, 0
        ckpt = Path(args.source)
    else:
        steps, lr, ipc, batch = CANDIDATES[name]
        run = Path(args.out) / f"train-{_train_key(lr, ipc, batch)}"
        ckpt = run / "checkpoints" / f"step_{steps:07d}"
    loaded: list[Any] = []

    def models() -> Any:
        """The fine-tune alone (DoG is not sampled in the search); trained only when a set must be sampled
        (rescoring cached sample sets needs no checkpoint)."""
        if not loaded:
            path = ckpt if name == SOURCE_CHECK else finetune_to(Path(args.out), steps, lr, ipc, batch, args.source)
            timing.setdefault("finetune_s", round(time.perf_counter() - t0, 1))
            loaded.append(load_models(str(path)))
        return loaded[0]

    labels = np.arange(args.n) % len(scorer.classes)  # class-balanced, as balanced_labels

    def sample_group(method: str, w: float) -> list[dict[str, Any]]:
        key = "unguided" if method == "unguided" else f"cfg-w{w:g}"
        rows = []
        for rep in range(args.replicates):
            set_key = f"{key}/seed{rep}"
            npz = cdir / "samples" / f"{key}-seed{rep}.npz"
            if set_key not in partial or _missing(partial[set_key], args.fid, scorer.judge_id):
                if npz.is_file():
                    images = np.load(npz)["images"]
                else:
                    t1 = time.perf_counter()
                    seeds = [rep * 100000 + i for i in range(args.n)]
                    settings = GenerationSettings(method=method, scale=w, sampler="ddim", steps="25",
                                                  clip_denoised=True, seeds=seeds, labels=labels.tolist())
                    images = to_nhwc(to_uint8(sample_images(settings, models())))  # (N, 16, 16, 1)
                    npz.parent.mkdir(exist_ok=True)
                    tmp = npz.with_suffix(".tmp.npz")
                    np.savez(tmp, images=images)
                    tmp.replace(npz)
                    timing[f"sample_{key}_s"] = round(timing.get(f"sample_{key}_s", 0) + time.perf_counter() - t1, 1)
                row = partial.get(set_key) or {}
                if _missing(row, False, scorer.judge_id):  # new, or scored by another judge / before round 3
                    row.update(scorer.score(images, labels))  # FID (judge-independent) is kept
                if args.fid and ("fid" not in row or "intra_fid" not in row):
                    row.update(scorer.fid(images, labels))
                partial[set_key] = row
                write_json(partial_path, {**partial, "_seconds": timing})
            rows.append(partial[set_key])
        _log(f"{name} {key}: " + ", ".join(f"{m}={v:.4g}" for m, v in stats(rows).items() if not m.endswith("std")))
        return rows

    groups = {"floor": stats(floor), "unguided": stats(sample_group("unguided", 1.0))}
    screened = groups["unguided"]["class_match"] < args.screen
    if not screened:
        for w in args.w:
            groups[f"cfg-w{w:g}"] = stats(sample_group("cfg", w))
    result = {"name": name, "demo_config": {"finetune_steps": steps, "images_per_class": ipc, "finetune_batch": batch,
                                            "train_overrides": {"lr": lr}},
              "lr": lr, "checkpoint": str(ckpt), "n_per_replicate": args.n, "replicates": args.replicates,
              "sampler": "ddim", "steps": 25, "w": args.w, "screened_out": screened, "groups": groups,
              "classes": scorer.classes,
              "criteria": criteria(groups, ceiling, args.min_class_match, len(scorer.classes)), "seconds": timing,
              "per_set": partial}
    if screened:
        result["criteria"]["c"]["met"] = None
        result["criteria"]["all_met"] = False
    timing.setdefault("finetune_s", 0.0)
    result["seconds"]["total_s"] = round(sum(v for k, v in timing.items() if k != "total_s"), 1)
    write_json(cdir / "result.json", result)
    return result


def floor_rows(args: argparse.Namespace, scorer: Scorer) -> tuple[list[dict[str, Any]], float]:
    """The real floor (cached in floor.json) and the judge's 4-class accuracy on all held-out target images."""
    tag = "" if scorer.classes == TARGET else "-source"
    path = Path(args.out) / ("floor.json" if args.n == 100 and not tag else f"floor{tag}-n{args.n}.json")
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("n") != args.n or len(cached.get("rows", [])) != args.replicates \
            or any(_missing(r, args.fid, scorer.judge_id) for r in cached["rows"]):
        rows = []
        for images, labels in floor_sets(args.n, args.replicates, scorer.classes):
            row = scorer.score(images, labels)
            if args.fid:
                row.update(scorer.fid(images, labels))
            rows.append(row)
        ds = load_builtin("animal-mnist", resolution=RES, channels=1, classes=scorer.classes, split="test")
        test = scorer.score(np.ascontiguousarray(ds.images[..., None]), ds.labels)
        cached = {"n": args.n, "rows": rows, "ceiling_class_match_all_test": test["class_match"],
                  "ceiling_in_domain_all_test": test["in_domain"], "test_images": len(ds.labels),
                  "judge": scorer.clf_info}
        write_json(path, cached)
    return cached["rows"], cached["ceiling_class_match_all_test"]


def summary(out: Path) -> str:
    """Markdown tables of every cached candidate result (numbers as stored, 4 significant digits)."""
    lines = []
    floor = json.loads((out / "floor.json").read_text()) if (out / "floor.json").is_file() else {}
    if floor:
        lines.append(f"Judge: held-out 10-class accuracy {floor['judge']['test_accuracy']:.4f}; ceiling (class match "
                     f"of all {floor['test_images']} real held-out target images) "
                     f"{floor['ceiling_class_match_all_test']:.4f}, in-domain {floor['ceiling_in_domain_all_test']:.4f}.\n")
    for path in sorted(out.glob("cand-*/result.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        c = r["criteria"]
        lines.append(f"### {r['name']} (N={r['n_per_replicate']} x {r['replicates']} seeds; "
                     f"wall {r['seconds']['total_s']} s: {r['seconds']})\n")
        lines.append("| set | class match | in-domain | KID judge | FD judge | FID | intra KID judge | intra FD judge "
                     "| intra FID |\n|---|---|---|---|---|---|---|---|---|")
        for g, s in r["groups"].items():
            cells = [f"{s[m]:.4g} ± {s[m + '_std']:.2g}" if m in s else "-" for m in ALL_METRICS]
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
        fmt = lambda d: "; ".join(f"{m}: gap {v['gap']:.3g}, pooled std {v['pooled_std']:.2g}, z {v['z']:.2f}"
                                  for m, v in d.items())
        lines.append(f"\n(a) {'MET' if c['a']['met'] else 'not met'}: unguided class match "
                     f"{c['a']['unguided_class_match']:.4f} ± {c['a']['std']:.2g} (ceiling {c['a']['ceiling']:.4f}, "
                     f"chance {c['a']['chance']})")
        lines.append(f"(b) {'MET' if c['b']['met'] else 'not met'}: unguided vs floor: {fmt(c['b']['unguided_vs_floor'])}")
        for k, d in c["b"].get("cfg_vs_floor", {}).items():
            lines.append(f"    {k} vs floor: {fmt(d)}")
        if c["c"]["met"] is None:
            lines.append("(c) not measured (screened out by (a): CFG not sampled)")
        else:
            lines.append(f"(c) {'MET' if c['c']['met'] else 'not met'}:")
            for k, d in c["c"]["unguided_vs_cfg"].items():
                lines.append(f"    unguided vs {k}: {fmt(d)}")
        lines.append(f"all three: {'YES' if c['all_met'] else 'no'}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/regime-search", help="cache folder [default: runs/regime-search]")
    p.add_argument("--only", default=None, help=f"comma-separated candidates, in order [default: all: {list(CANDIDATES)}]")
    p.add_argument("--n", type=int, default=100, help="samples per (setting, seed replicate) [default: 100]")
    p.add_argument("--replicates", type=int, default=3, help="seed replicates [default: 3]")
    p.add_argument("--w", type=float, nargs="+", default=[1.5, 3.0], help="CFG scales [default: 1.5 3]")
    p.add_argument("--min-class-match", type=float, default=0.5, help="criterion (a) [default: 0.5]")
    p.add_argument("--screen", type=float, default=0.4,
                   help="skip CFG sampling when unguided class match is below this [default: 0.4]")
    p.add_argument("--fid", action="store_true", help="also FID-Inception (slow; for the final candidates)")
    p.add_argument("--source", default=default_source(), help="source checkpoint [default: the shipped one]")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads [default: 1; on a shared 2-core machine 2 threads were 6x slower]")
    p.add_argument("--summary", action="store_true", help="print the tables of the cached results and exit")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.summary:
        print(summary(out))
        return 0
    names = args.only.split(",") if args.only else list(CANDIDATES)
    bad = [n for n in names if n not in CANDIDATES and n != SOURCE_CHECK]
    if SOURCE_CHECK in names and len(names) > 1:
        p.error(f"--only {SOURCE_CHECK} runs alone (it scores against the source classes' reference)")
    if bad:
        p.error(f"--only: unknown candidate(s) {bad}; expected among {list(CANDIDATES)}")
    classes = SOURCE_CLASSES if names == [SOURCE_CHECK] else TARGET
    if args.n % len(classes):
        p.error(f"--n must be a multiple of {len(classes)} (class-balanced), got {args.n}")
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(out, classes)
    floor, ceiling = floor_rows(args, scorer)
    _log(f"judge {scorer.clf_info}; ceiling class match {ceiling:.4f}; floor {stats(floor)}")
    for name in names:
        _log(f"candidate {name}: {CANDIDATES.get(name, args.source)}")
        r = run_candidate(name, args, scorer, floor, ceiling)
        _log(f"{name}: a={r['criteria']['a']['met']} b={r['criteria']['b']['met']} c={r['criteria']['c']['met']} "
             f"all={r['criteria']['all_met']} ({r['seconds']['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
