"""The embedded demo: a shortened end-to-end run, its report and numbers, the CLI and the helpers."""
from __future__ import annotations

import hashlib

import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from domain_guidance.io.data import load_builtin
from domain_guidance.pipelines.demo import classifier as judge
from domain_guidance.io.data.glyphs import glyph_hue
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.demo.domains import get_target
from domain_guidance.pipelines.demo.report import rel_change
from domain_guidance.pipelines.generate import load_samples


def tiny_config(out: Path) -> DemoConfig:
    """The default (covered glyph) target at toy size: a T/2-sized source pre-trained for a few dozen steps, a
    handful of samples, one w, two seed replicates."""
    return DemoConfig(out=str(out), pretrain=True, pretrain_steps=30, model="T/2",
                      model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}, finetune_steps=10,
                      finetune_batch=8, images_per_class=5, w=[2.0], samples=8, seeds=[0, 1], steps=5, batch_size=8,
                      reference_images=8, classifier_epochs=0.2, kid_subsets=7, progress=False)


def _table_rows(report: str, header_starts: str) -> dict[str, list[str]]:
    """Rows of the first markdown table of the report whose header row starts with ``header_starts``,
    keyed by their first cell."""
    rows: dict[str, list[str]] | None = None
    for line in report.splitlines():
        if rows is None:
            if line.startswith(header_starts):
                rows = {}
            continue
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    assert rows, f"no table with a header starting {header_starts!r}"
    return rows


def _frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """Textbook Frechet distance |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2 (np.cov, eigh), float64.

    Computed in the span of both centred sets and the mean difference (an orthonormal basis from QR):
    both covariances vanish outside it, so the distance is the same, and a few-image set in 2048-d costs
    a small eigenproblem; eigenvalues below 1e-12 of the largest are round-off and count as zero.
    """
    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    q, _ = np.linalg.qr(np.vstack([f1 - mu1, f2 - mu2, (mu1 - mu2)[None]]).T)  # (D, k)
    p1, p2 = f1 @ q, f2 @ q  # (n, k)
    s1, s2 = np.cov(p1, rowvar=False), np.cov(p2, rowvar=False)

    def psd_sqrt_eigs(w: np.ndarray) -> np.ndarray:
        return np.sqrt(np.where(w > 1e-12 * w.max(), w, 0.0))

    w, v = np.linalg.eigh(s1)
    root = (v * psd_sqrt_eigs(w)) @ v.T
    diff = p1.mean(0) - p2.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2)
                 - 2 * psd_sqrt_eigs(np.linalg.eigvalsh(root @ s2 @ root)).sum())


def _kid(real: np.ndarray, fake: np.ndarray, n_subsets: int) -> tuple[float, float]:
    """KID written out: per subset pair (drawn like metrics.kid: default_rng(0), real then fake, without
    replacement), sum_{i != j} k(x_i, x_j) / (m (m-1)) + the same for y - 2 mean_{i,j} k(x_i, y_j), with
    k(x, y) = (x . y / D + 1)^3; mean and std (ddof 0) over the subsets."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    m, d = min(len(real), len(fake)), real.shape[1]
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(n_subsets):
        x, y = real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)]
        kxx = sum((x[i] @ x[j] / d + 1) ** 3 for i in range(m) for j in range(m) if i != j)
        kyy = sum((y[i] @ y[j] / d + 1) ** 3 for i in range(m) for j in range(m) if i != j)
        kxy = sum((x[i] @ y[j] / d + 1) ** 3 for i in range(m) for j in range(m))
        vals.append(kxx / (m * (m - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (m * m))
    return float(np.mean(vals)), float(np.std(vals))


def _setting(r: dict) -> tuple:
    return (r["finetune"], r["method"], r["w"], tuple(r["interval"]) if r.get("interval") else None)


@pytest.mark.slow
def test_demo_end_to_end_report_numbers_come_from_the_run(tmp_path: Path) -> None:
    from domain_guidance.pipelines.demo.run import reference_images, run_demo
    from domain_guidance.pipelines.metrics.inception import InceptionExtractor

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # few images -> rank-deficient covariances
        results = run_demo(tiny_config(tmp_path))
    elapsed = time.perf_counter() - t0
    out = tmp_path
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == results["summary"]
    assert set(saved["stage_seconds"]) >= {"source model", "classifier", "sampling", "evaluation", "real floors",
                                           "total"}
    assert saved["source"]["trained_now"] and saved["source"]["steps"] == 30
    grid = [("unguided", 1.0, None), ("cfg", 2.0, None), ("dog", 2.0, None), ("dog", 2.0, [82.0, 578.0])]
    assert [(r["method"], r["w"], r["interval"]) for r in saved["runs"]] == grid * 2
    assert [r["seed"] for r in saved["runs"]] == [0] * 4 + [1] * 4
    for png in ("metrics-vs-w-ld0.1.png", "samples-ld0.1.png"):
        assert (out / png).stat().st_size > 0

    # the real floor sets: same N and class counts as the samples, real target images outside the
    # fine-tuning and reference images, disjoint between replicates
    assert saved["config"]["target"] == "covered" and saved["config"]["target_classes"] == [0, 1, 2, 3]
    ft_images = load_builtin("glyphs-blue", resolution=16, classes=[0, 1, 2, 3], split="train",
                             images_per_class=5).images
    train = load_builtin("glyphs-blue", resolution=16, classes=[0, 1, 2, 3], split="train")
    ref = reference_images(tiny_config(out))
    assert ref.shape == (8, 16, 16, 3)
    as_set = lambda a: {im.tobytes() for im in a.reshape(len(a), -1)}  # noqa: E731
    floors = saved["floors"]
    assert [(f["method"], f["seed"], f["n"]) for f in floors] == [("real", 0, 8), ("real", 1, 8)]
    real_sets = [np.load(f["images"]) for f in floors]
    for z in real_sets:
        assert z["images"].shape == (8, 16, 16, 3) and sorted(z["labels"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
        got = as_set(z["images"])
        assert len(got) == 8 and not got & as_set(ft_images) and not got & as_set(ref)
        for im, y in zip(z["images"], z["labels"]):  # each is a train image of its class
            assert any(np.array_equal(im, t) for t in train.images[train.labels == y])
    assert not as_set(real_sets[0]["images"]) & as_set(real_sets[1]["images"])

    # every metric recomputed from the saved images / features, independently of the demo's code
    model, info = judge.train_classifier(out, 16, 0.2, 128, progress=False, target=get_target("covered"))
    assert info == saved["classifier"] and (model.channels, model.head.out_features) == (3, 12)
    # the judge trained on the 12 glyph shapes in every hue, without the floor pool: the train split minus
    # every image reserved for floors
    all_train = load_builtin("glyphs", resolution=16, split="train").images
    reserved = sum(int(hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest(), 16) % 20 < 11 for im in all_train)
    assert info["train_images"] == len(all_train) - reserved and 0.4 < reserved / len(all_train) < 0.7
    for f, z in zip(floors, real_sets):  # so no floor image is one the judge saw
        assert all(int(hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest(), 16) % 20 < 11
                   for im in z["images"])
    ref_judge = judge.features(model, judge.uint8_to_input(ref, 3))
    # the reference's class of each image: the class of the held-out test image it is
    test = load_builtin("glyphs-blue", resolution=16, classes=[0, 1, 2, 3], split="test")
    ref_lab = np.array([test.labels[(test.images == im).all((1, 2, 3))][0] for im in ref])
    assert sorted(ref_lab.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]

    def intra(fn, ref_f: np.ndarray, f: np.ndarray, lab: np.ndarray) -> float:  # mean over classes of fn(ref_k, f_k)
        return float(np.mean([fn(ref_f[ref_lab == k], f[lab == k]) for k in range(4)]))

    with np.load(out / "fid-reference.npz") as z:
        ref_inception = z["features"]
    assert ref_inception.shape == (8, 2048)
    inception = InceptionExtractor(None, device="cpu")
    sets = [(r, *load_samples(r["samples"])) for r in saved["runs"]]
    sets += [(f, z["images"], z["labels"]) for f, z in zip(floors, real_sets)]
    for k, (r, images, labels) in enumerate(sets):
        assert images.shape == (8, 16, 16, 3) and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
        pred = judge.predict(model, judge.uint8_to_input(images, 3)).argmax(1).numpy()
        assert r["in_domain"] == np.isin(pred, [0, 1, 2, 3]).mean()
        assert r["class_match"] == (pred == np.array([0, 1, 2, 3])[labels]).mean()
        hue = glyph_hue(images)  # the exact domain: the shape's hue in the blue band [0.55, 0.72)
        assert r["domain_exact"] == np.mean((hue >= 0.55) & (hue < 0.72))
        feats = judge.features(model, judge.uint8_to_input(images, 3))
        assert r["fd_classifier"] == pytest.approx(_frechet(feats, ref_judge), rel=1e-6)  # float32 features
        kid_mean, kid_std = _kid(ref_judge, feats, 7)
        assert r["kid_classifier"] == pytest.approx(kid_mean, rel=1e-6, abs=1e-9)
        assert r["kid_classifier_subset_std"] == pytest.approx(kid_std, rel=1e-6, abs=1e-9)
        # intra-class: samples requested as k (real: of class k) vs the reference images of class k, mean over k
        assert r["intra_fd_classifier"] == pytest.approx(intra(lambda a, b: _frechet(b, a), ref_judge, feats, labels),
                                                         rel=1e-6)
        # float32 features: KID is a difference of kernel sums of order 1, so its error is absolute (~1e-8 seen)
        assert r["intra_kid_classifier"] == pytest.approx(intra(lambda a, b: _kid(a, b, 7)[0], ref_judge, feats,
                                                                labels), rel=1e-6, abs=1e-7)
        with np.load(r["inception_features"]) as z:
            inc = z["features"]
        if k == len(sets) - 1:  # the saved features are those of these images
            np.testing.assert_allclose(inception(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy(), inc,
                                       rtol=1e-4, atol=1e-4)
        assert r["fid"] == pytest.approx(_frechet(inc, ref_inception), rel=1e-9)
        kid_mean, kid_std = _kid(ref_inception, inc, 7)
        assert r["kid"] == pytest.approx(kid_mean, rel=1e-6, abs=1e-9)
        assert r["kid_subset_std"] == pytest.approx(kid_std, rel=1e-6, abs=1e-9)
        assert r["intra_fid"] == pytest.approx(intra(lambda a, b: _frechet(b, a), ref_inception, inc, labels), rel=1e-6)
        assert r["intra_kid"] == pytest.approx(intra(lambda a, b: _kid(a, b, 7)[0], ref_inception, inc, labels),
                                               rel=1e-6, abs=1e-9)
        assert r["fid"] > 0
        # 8 samples against 8 reference images: KID's subset size is 8, each subset is all of both sets, and
        # the spread over subsets is 0 by construction (not rounding noise, which differed between CPUs)
        assert r["kid_subset_size"] == 8 and r["kid_subset_std"] == 0.0 == r["kid_classifier_subset_std"]
    # same seeds in every setting of a replicate
    seeds = [np.load(r["samples"])["seeds"].tolist() for r in saved["runs"]]
    assert seeds[:4] == [list(range(8))] * 4 and seeds[4:] == [list(range(100000, 100008))] * 4

    # summary rows: replicate values, mean and std (ddof 1) by hand
    records = saved["runs"] + floors
    by_setting: dict[tuple, list[dict]] = {}
    for r in records:
        by_setting.setdefault(_setting(r), []).append(r)
    assert len(saved["summary"]) == len(by_setting) == 5
    metrics = ("fid", "kid", "fd_classifier", "kid_classifier", "intra_fid", "intra_kid", "intra_fd_classifier",
               "intra_kid_classifier", "in_domain", "class_match", "domain_exact")
    for row in saved["summary"]:
        rs = by_setting[_setting(row)]
        for m in metrics:
            vals = [r[m] for r in rs]
            assert row["values"][m] == vals
            assert row[m] == pytest.approx(sum(vals) / 2, rel=1e-12)
            assert row[f"{m}_std"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5, rel=1e-9, abs=1e-15)

    # resolved flags from the recorded replicate values: |mean diff| > 2 * sqrt((s_a^2 + s_b^2) / 2)
    pairs = {(c["a"]["method"], bool(c["a"]["interval"]), c["b"]["method"], bool(c["b"]["interval"]))
             for c in saved["comparisons"]}
    assert pairs == {("dog", False, "cfg", False), ("dog", False, "unguided", False), ("dog", True, "cfg", False),
                     ("dog", True, "unguided", False), ("dog", True, "dog", False), ("cfg", False, "unguided", False),
                     ("unguided", False, "real", False), ("cfg", False, "real", False), ("dog", False, "real", False),
                     ("dog", True, "real", False)}
    assert len(saved["comparisons"]) == len(pairs) * len(metrics)
    lower = {"fid", "kid", "fd_classifier", "kid_classifier", "intra_fid", "intra_kid", "intra_fd_classifier",
             "intra_kid_classifier"}
    for c in saved["comparisons"]:
        key = lambda s: ("ld0.1" if s["method"] != "real" else None, s["method"], s["w"],  # noqa: E731
                         tuple(s["interval"]) if s["interval"] else None)
        a = [r[c["metric"]] for r in by_setting[key(c["a"])]]
        b = [r[c["metric"]] for r in by_setting[key(c["b"])]]
        var = lambda v: (v[0] - v[1]) ** 2 / 2  # noqa: E731  (sample variance of two values)
        diff, spread = (a[0] + a[1] - b[0] - b[1]) / 2, ((var(a) + var(b)) / 2) ** 0.5
        assert c["diff"] == pytest.approx(diff, rel=1e-9, abs=1e-15)
        assert c["resolved"] == (abs(diff) > 2 * spread)
        assert c["better"] == (None if not c["resolved"] else "a" if (diff < 0) == (c["metric"] in lower) else "b")

    # regime checks from the run's numbers
    diag = saved["diagnostics"]["ld0.1"]
    ung = [r["class_match"] for r in by_setting[("ld0.1", "unguided", 1.0, None)]]
    real_cm = [r["class_match"] for r in floors]
    lc = diag["learned_classes"]
    assert lc["chance"] == 0.25 and lc["unguided_class_match"] == pytest.approx(sum(ung) / 2)
    assert lc["real_ceiling"] == pytest.approx(sum(real_cm) / 2)
    assert lc["above_chance"] == (sum(ung) / 2 - 0.25 > 2 * abs(ung[0] - ung[1]) / 2 ** 0.5)
    for m, w in diag["worse_than_floor"].items():
        same = next(c for c in saved["comparisons"] if c["metric"] == m and c["a"]["method"] == "unguided"
                    and c["b"]["method"] == "real")
        assert w["worse"] == (same["better"] == "b")
    for m, cfg_cell in diag["cfg_improves"].items():  # one w: the best is w = 2
        same = next(c for c in saved["comparisons"] if c["metric"] == m and c["a"]["method"] == "cfg"
                    and c["b"]["method"] == "unguided")
        assert cfg_cell["w"] == 2.0 and cfg_cell["improves"] == (same["better"] == "a")

    # the report's table cells and flags are the numbers of results.json
    report = (out / "report.md").read_text()
    rows = _table_rows(report, "| Setting | FID (Inception)")  # marginal metrics (first w table)
    per_class = _table_rows(report, "| Setting | intra-class FID")  # per-class metrics and the judge's rates
    summary = {_setting(r): r for r in saved["summary"]}
    for label, key in (("Real (floor)", (None, "real", None, None)), ("Unguided", ("ld0.1", "unguided", 1.0, None)),
                       ("CFG (w=2)", ("ld0.1", "cfg", 2.0, None)), ("DoG (w=2)", ("ld0.1", "dog", 2.0, None)),
                       ("DoG (w=2, t∈[82,578])", ("ld0.1", "dog", 2.0, (82.0, 578.0)))):
        r = summary[key]
        assert rows[label] == [f"{r['fid']:.2f} ± {r['fid_std']:.2f}",
                               f"{1e3 * r['kid']:.2f} ± {1e3 * r['kid_std']:.2f}",
                               f"{r['fd_classifier']:.1f} ± {r['fd_classifier_std']:.1f}",
                               f"{r['kid_classifier']:.4g} ± {r['kid_classifier_std']:.4g}"]
        assert per_class[label] == [f"{r['intra_fid']:.2f} ± {r['intra_fid_std']:.2f}",
                                    f"{1e3 * r['intra_kid']:.2f} ± {1e3 * r['intra_kid_std']:.2f}",
                                    f"{r['intra_fd_classifier']:.1f} ± {r['intra_fd_classifier_std']:.1f}",
                                    f"{r['intra_kid_classifier']:.4g} ± {r['intra_kid_classifier_std']:.4g}",
                                    f"{r['in_domain']:.3f} ± {r['in_domain_std']:.3f}",
                                    f"{r['class_match']:.3f} ± {r['class_match_std']:.3f}",
                                    f"{r['domain_exact']:.3f} ± {r['domain_exact_std']:.3f}"]
    dog_vs_cfg = {c["metric"]: c for c in saved["comparisons"] if c["a"]["method"] == "dog" and not c["a"]["interval"]
                  and c["b"]["method"] == "cfg"}
    flag = lambda c: rel_change(c["mean_a"], c["mean_b"]) + (", resolved" if c["resolved"] else ", not resolved")  # noqa: E731
    assert rows["DoG vs CFG"] == [flag(dog_vs_cfg[m]) for m in ("fid", "kid", "fd_classifier", "kid_classifier")]
    assert per_class["DoG vs CFG"] == [flag(dog_vs_cfg[m]) for m in ("intra_fid", "intra_kid", "intra_fd_classifier",
                                                                     "intra_kid_classifier", "in_domain", "class_match",
                                                                     "domain_exact")]
    assert "N = 8 samples per setting" in report and "w in [2.0]" in report and "seed replicates [0, 1]" in report
    unresolved = [c["metric"] for c in dog_vs_cfg.values() if not c["resolved"]]
    if unresolved:
        assert f"- w=2: no resolved difference between DoG (w=2) and CFG on {', '.join(unresolved)}." in report
    for c in dog_vs_cfg.values():
        if c["resolved"]:
            assert re.search(rf"- w=2: (DoG \(w=2\) beats CFG|CFG beats DoG \(w=2\)) on {c['metric']} \(resolved",
                             report)
    assert elapsed < 600  # 2-4 min on 2 cores shared with other jobs; generous for a loaded CI machine
