"""Criteria (a), (b), (c) of the round-4 regime search (docs/regime-search.md) for a glyph target fine-tune.

The fine-tune is sampled unguided and with CFG at each ``--w`` (N per replicate, replicate r: seeds
r * 100000 + 0..N-1, labels i mod K); reference: 100 held-out test images per target class of the target's
built-in set; floor: ``--replicates`` disjoint sets of N further test images (source_check.real_sets).
Metrics: FID / KID (Inception), FD / KID in the penultimate features of a judge (the demo's SmallCNN with
3 channels, trained here on the ``glyphs`` train split, all 12 shapes in every hue: a set the target's
images are not drawn from), class match (judge's shape = requested shape) and the exact blue rate.
(a) unguided class match >= 0.5; (b) unguided resolved worse than the floor on a quality metric;
(c) CFG resolved better than unguided on a marginal quality metric at some w.
DoG is sampled only with ``--guide SOURCE`` (the plan: after (a), (b) and (c) are met): DoG at each ``--w``
with the same seeds and labels, and the z of DoG against CFG per metric and w (positive: DoG better).

    .venv/bin/python benchmarks/target_check.py --model runs/glyph-target-covered --shapes 0,1,2,3 \
        --out runs/target-check/covered
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from domain_guidance.io.atomic import write_json
from domain_guidance.io.data import load_builtin
from domain_guidance.io.fingerprints import fingerprint_weights
from domain_guidance.io.images import to_nhwc, to_uint8
from domain_guidance.pipelines.demo.classifier import SmallCNN
from domain_guidance.pipelines.generate import GenerationSettings, load_models, sample_images
from domain_guidance.pipelines.metrics.frechet import frechet_distance_from_features
from domain_guidance.pipelines.metrics.kid import kid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_check import (InceptionScorer, _log, open_check_cache, parse_classes, real_sets,  # noqa: E402
                          summarise, z_better)

QUALITY = ("fid", "kid", "fd_judge", "kid_judge")
JUDGE = {"epochs": 4.0, "seed": 0, "batch": 128, "lr": 2e-3, "data": "glyphs train split"}


def _inputs(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_judge(out: Path, epochs: float = JUDGE["epochs"], seed: int = JUDGE["seed"]
                ) -> tuple[SmallCNN, dict[str, Any]]:
    """A 12-shape CNN on the glyphs train split (cached in out/judge.pt); held-out accuracy on its test split."""
    path = out / "judge.pt"
    torch.manual_seed(seed)
    model = SmallCNN(channels=3, num_classes=12)
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return model.eval(), saved["info"]
    train = load_builtin("glyphs", split="train")
    x, y = _inputs(train.images), torch.from_numpy(train.labels)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=JUDGE["lr"])
    steps = int(epochs * len(x) / JUDGE["batch"])
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (JUDGE["batch"],), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = load_builtin("glyphs", split="test")
    with torch.no_grad():
        acc = float((model(_inputs(test.images)).argmax(1).numpy() == test.labels).mean())
    info = {"test_accuracy": acc, "steps": steps, "train_images": len(x), "test_images": len(test.labels)}
    torch.save({"state_dict": model.state_dict(), "info": info}, path)
    return model, info


class Scorer:
    """Inception FID/KID, judge FD/KID, class match and blue rate of uint8 NHWC sets against one reference."""

    def __init__(self, reference: np.ndarray, judge: SmallCNN, shapes: list[int], out: Path) -> None:
        self.inception = InceptionScorer(reference, out / "reference_features.npy")
        self.judge, self.shapes = judge, np.asarray(shapes)
        self.ref_judge = self._judge_features(reference)

    @torch.no_grad()
    def _judge_features(self, images: np.ndarray) -> np.ndarray:
        return self.judge.features(_inputs(images)).double().numpy()  # (N, 128)

    @torch.no_grad()
    def score(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        row = self.inception.score(images)  # fid, kid, blue_rate
        f = self._judge_features(images)
        pred = self.judge(_inputs(images)).argmax(1).numpy()
        k = kid(self.ref_judge, f, n_subsets=100, subset_size=min(len(f), len(self.ref_judge)), seed=0)
        return {**row, "fd_judge": frechet_distance_from_features(f, self.ref_judge, method="svd"),
                "kid_judge": float(k["kid_mean"]), "class_match": float((pred == self.shapes[labels]).mean())}


def criteria(groups: dict[str, dict[str, float]]) -> dict[str, Any]:
    ung, floor = groups["unguided"], groups["floor"]
    b = {m: z_better(ung, floor, m) for m in QUALITY}
    c = {k: {m: z_better(ung, g, m) for m in QUALITY} for k, g in groups.items() if k.startswith("cfg")}
    out = {"a": {"class_match": ung["class_match"], "met": ung["class_match"] >= 0.5},
           "b": {"z_unguided_vs_floor": b, "met": any(z > 2 for z in b.values())},
           "c": {"z_unguided_vs_cfg": c, "met": any(z > 2 for d in c.values() for z in d.values())}}
    out["all_met"] = all(out[k]["met"] for k in "abc")
    return out


def dog_vs_cfg(groups: dict[str, dict[str, float]], ws: list[float]) -> dict[str, dict[str, float]]:
    """Per w and metric, z of DoG against CFG at that w, positive = DoG better (lower distance; higher class
    match); |z| > 2 is a resolved difference."""
    out = {}
    for w in ws:
        cfg, dog = groups[f"cfg-w{w:g}"], groups[f"dog-w{w:g}"]
        out[f"w{w:g}"] = {**{m: z_better(cfg, dog, m) for m in QUALITY},
                          "class_match": -z_better(cfg, dog, "class_match"), "blue_rate": -z_better(cfg, dog, "blue_rate")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the target fine-tune (run dir or checkpoint)")
    p.add_argument("--dataset", default="glyphs-blue", help="the target's built-in set [glyphs-blue]")
    p.add_argument("--shapes", required=True, help="target shapes = the fine-tune's labels 0..K-1, e.g. 0,1,2,3")
    p.add_argument("--n", type=int, default=100, help="images per (setting, replicate) [100, as rounds 1-3]")
    p.add_argument("--replicates", type=int, default=3)
    p.add_argument("--w", type=float, nargs="+", default=[1.25, 1.5, 2.0])
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--guide", help="the pre-trained source: also sample DoG (guide = source at its null label)")
    args = p.parse_args(argv)
    shapes = parse_classes(args.shapes)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    identity = {"model": str(Path(args.model).resolve()), "model_sha256": fingerprint_weights(args.model),
                "dataset": args.dataset, "shapes": shapes, "n": args.n, "judge": JUDGE}  # the cached judge's settings
    try:
        cache_path, cache = open_check_cache(out, identity)
    except ValueError as e:
        p.error(str(e))
    if args.guide:  # DoG sets are cached for one guide only
        guide = {"guide": str(Path(args.guide).resolve()), "guide_sha256": fingerprint_weights(args.guide)}
        if cache.get("guide", guide) != guide:
            p.error(f"{out} holds DoG sets guided by {cache['guide']}, not {guide}: use another --out")
        cache["guide"] = guide
    judge, judge_info = train_judge(out)
    _log(f"judge: {judge_info}")
    ref, floors = real_sets(args.dataset, shapes, args.n, args.replicates, 16)
    scorer = Scorer(ref, judge, shapes, out)
    labels = np.arange(args.n) % len(shapes)
    rows: dict[str, list[dict[str, float]]] = {"floor": []}
    for r, (floor, floor_labels) in enumerate(floors):
        if f"floor/{r}" not in cache:
            cache[f"floor/{r}"] = scorer.score(floor, floor_labels)
            write_json(cache_path, cache)
        rows["floor"].append(cache[f"floor/{r}"])
    models = load_models(args.model, guide=args.guide)
    plan = [("unguided", 1.0)] + [("cfg", w) for w in args.w] + [("dog", w) for w in args.w if args.guide]
    for method, w in plan:
        name = "unguided" if method == "unguided" else f"{method}-w{w:g}"
        rows[name] = []
        for r in range(args.replicates):
            if f"{name}/{r}" not in cache:
                s = GenerationSettings(method=method, scale=w, sampler="ddim", steps="25", clip_denoised=True,
                                       seeds=[r * 100000 + i for i in range(args.n)], labels=labels.tolist())
                images = to_nhwc(to_uint8(sample_images(s, models)))  # (N, 16, 16, 3)
                np.savez_compressed(out / f"{name}-seed{r}.npz", images=images)
                cache[f"{name}/{r}"] = scorer.score(images, labels)
                write_json(cache_path, cache)
            rows[name].append(cache[f"{name}/{r}"])
        _log(f"{name}: " + ", ".join(f"{m}={v:.4g}" for m, v in summarise(rows[name]).items()))
    groups = {k: summarise(v) for k, v in rows.items()}
    result = {"identity": identity, "judge": judge_info, "groups": groups, "criteria": criteria(groups)}
    if args.guide:
        result["guide"], result["dog_vs_cfg"] = cache["guide"], dog_vs_cfg(groups, args.w)
        _log(f"DoG vs CFG (z, positive = DoG better): {json.dumps(result['dog_vs_cfg'])}")
    write_json(out / "result.json", result)
    _log(f"criteria: {json.dumps(result['criteria'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
