"""The embedded demo: a shortened end-to-end run, its report and numbers, the CLI and the helpers."""
from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from domain_guidance.cli import build_parser
from domain_guidance.cli.demo import config_from_args
from domain_guidance.pipelines.demo import classifier as judge
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.demo.report import rel_change, verdict
from domain_guidance.pipelines.generate import load_samples
from domain_guidance.pipelines.metrics.frechet import frechet_distance_from_features


def tiny_config(out: Path) -> DemoConfig:
    """A T/2-sized source pre-trained for a few dozen steps, a handful of samples, one w."""
    return DemoConfig(out=str(out), pretrain=True, pretrain_steps=30, model="T/2",
                      model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}, finetune_steps=10,
                      finetune_batch=8, images_per_class=5, w=[2.0], samples=6, seeds=[0], steps=5, batch_size=8,
                      reference_images=8, classifier_epochs=0.2, progress=False)


def _table_rows(report: str) -> dict[str, list[str]]:
    """Markdown table rows of the report, keyed by their first cell."""
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_demo_end_to_end_report_numbers_come_from_the_run(tmp_path: Path) -> None:
    from domain_guidance.pipelines.demo.run import run_demo

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # few images -> rank-deficient covariances
        results = run_demo(tiny_config(tmp_path))
    elapsed = time.perf_counter() - t0
    out = tmp_path
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == results["summary"]
    assert set(saved["stage_seconds"]) >= {"source model", "classifier", "sampling", "evaluation", "total"}
    assert saved["source"]["trained_now"] and saved["source"]["steps"] == 30
    assert [(r["method"], r["w"]) for r in saved["runs"]] == [("unguided", 1.0), ("cfg", 2.0), ("dog", 2.0)]
    for png in ("metrics-vs-w-ld0.1.png", "samples-ld0.1.png"):
        assert (out / png).stat().st_size > 0

    # the report's table cells are the numbers of results.json
    report = (out / "report.md").read_text()
    rows = _table_rows(report)
    by_method = {r["method"]: r for r in saved["summary"]}
    for label, method in (("Unguided", "unguided"), ("CFG (w=2)", "cfg"), ("DoG (w=2)", "dog")):
        r = by_method[method]
        assert rows[label] == [f"{r['fid']:.2f}", f"{r['fd_classifier']:.3f}", f"{r['in_domain']:.3f}",
                               f"{r['class_match']:.3f}"]
    assert rows["DoG vs CFG"][0] == rel_change(by_method["dog"]["fid"], by_method["cfg"]["fid"])
    assert "N = 6 samples per setting" in report and "w in [2.0]" in report and "seed replicates [0]" in report
    assert re.search(r"w=2, fid: DoG (beats|does NOT beat|ties with) CFG", report)

    # results.json equals a recomputation from the saved samples (classifier reloaded from its cache)
    model, info = judge.train_classifier(out, 16, 0.2, 128, progress=False)
    assert info == saved["classifier"]
    from domain_guidance.pipelines.demo.run import reference_images

    ref_feats = judge.features(model, judge.uint8_to_input(reference_images(tiny_config(out))))
    for run in saved["runs"]:
        images, labels = load_samples(run["samples"])
        assert images.shape == (6, 16, 16, 1) and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 3]
        pred = judge.predict(model, judge.uint8_to_input(images)).argmax(1).numpy()
        assert run["in_domain"] == pytest.approx(float(np.isin(pred, [6, 7, 8, 9]).mean()), abs=0)
        again = judge.domain_metrics(model, images, labels, [6, 7, 8, 9], ref_feats)
        assert again["fd_classifier"] == pytest.approx(run["fd_classifier"], rel=1e-9)
        assert np.isfinite(run["fid"]) and run["fid"] > 0
    # same seeds in every setting
    seeds = [np.load(r["samples"])["seeds"].tolist() for r in saved["runs"]]
    assert seeds[0] == seeds[1] == seeds[2] == list(range(6))
    assert elapsed < 180  # about 45 s on 2 busy cores; generous for a loaded CI machine


def test_low_rank_frechet_equals_the_reference_implementation() -> None:
    rng = np.random.default_rng(0)
    for n1, n2, d in ((30, 50, 64), (300, 200, 16)):
        a, b = rng.normal(size=(n1, d)), rng.normal(0.5, 1.5, size=(n2, d))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = frechet_distance_from_features(a, b, method="eigh")
        assert judge.frechet_from_features(a, b) == pytest.approx(expected, rel=1e-6)
    assert judge.frechet_from_features(a, a) == pytest.approx(0.0, abs=1e-9)


def test_domain_metrics_count_target_predictions() -> None:
    model = judge.SmallCNN()
    images = np.random.default_rng(0).integers(0, 256, size=(12, 16, 16, 1), dtype=np.uint8)
    pred = judge.predict(model, judge.uint8_to_input(images)).argmax(1).numpy()
    m = judge.domain_metrics(model, images, np.zeros(12, dtype=np.int64), [6, 7, 8, 9],
                             judge.features(model, judge.uint8_to_input(images[::-1].copy())))
    assert m["in_domain"] == pytest.approx(np.isin(pred, [6, 7, 8, 9]).mean())
    assert m["class_match"] == pytest.approx((pred == 6).mean())
    assert m["off_domain"] == pytest.approx(1 - m["in_domain"])


def test_report_says_when_dog_does_not_beat_cfg() -> None:
    summary = [{"finetune": "ld0.1", "method": "cfg", "w": 2.0, "fid": 10.0, "in_domain": 0.9},
               {"finetune": "ld0.1", "method": "dog", "w": 2.0, "fid": 12.0, "in_domain": 0.95}]
    lines = verdict(summary, "ld0.1", [2.0])
    assert "w=2, fid: DoG does NOT beat CFG (12.00 vs 10.00)." in lines[0]
    assert "beats" in lines[1] and "NOT" not in lines[1]
    assert rel_change(12.0, 10.0) == "+20.0%" and rel_change(1.0, 0.0) == "n/a"


def test_cli_options_and_variants() -> None:
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["demo", "--w", "1.5,2", "--seeds", "0 1", "--samples", "64"]))
    assert cfg.w == [1.5, 2.0] and cfg.seeds == [0, 1] and cfg.samples == 64 and cfg.out == "runs/demo"
    full = config_from_args(parser.parse_args(["demo", "--full", "--finetune-steps", "5"]))
    assert full.out == "runs/demo-full" and len(full.seeds) == 3 and len(full.w) > 2 and full.finetune_steps == 5
    assert full.also_without_dropout
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--full", "--quick"])
    with pytest.raises(ValueError, match="w must be"):
        DemoConfig(w=[0.5]).validate()
