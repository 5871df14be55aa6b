"""The demo's parts on their own: the judge, the Frechet estimator, the verdict, the grid and the floor pool."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from domain_guidance.pipelines.demo import analysis
from domain_guidance.pipelines.demo import classifier as judge
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.demo.report import rel_change, verdict
from domain_guidance.pipelines.metrics.frechet import frechet_distance_from_features


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


def test_verdict_states_only_resolved_differences() -> None:
    runs = [{"finetune": "ld0.1", "method": m, "w": 2.0, "interval": None, "seed": s, "n": 8, "fid": f, "in_domain": d}
            for m, fids, doms in (("cfg", (10.0, 10.2, 10.4), (0.80, 0.90, 1.00)),
                                  ("dog", (12.0, 12.2, 12.4), (0.85, 0.95, 1.05)))
            for s, (f, d) in enumerate(zip(fids, doms))]
    summary = analysis.summarize(runs)
    lines = verdict(summary, analysis.comparisons(summary, "ld0.1"), "ld0.1", [2.0])
    # FID 12.2 vs 10.2 (stds 0.2): resolved, CFG better; in-domain 0.95 vs 0.90 (stds 0.1): not resolved
    assert lines == ["- w=2: CFG beats DoG (w=2) on fid (resolved: CFG 10.20 ± 0.20 vs DoG (w=2) 12.20 ± 0.20).",
                     "- w=2: no resolved difference between DoG (w=2) and CFG on in_domain."]
    assert rel_change(12.0, 10.0) == "+20.0%" and rel_change(1.0, 0.0) == "n/a"


def test_settings_grid_and_floor_pool_limit(tmp_path: Path) -> None:
    from domain_guidance.pipelines.demo.floors import floor_sets
    from domain_guidance.pipelines.demo.run import settings_grid

    grid = settings_grid(DemoConfig(w=[1.5, 3.0], dog_interval=[500, 999]))
    assert grid[0] == {"method": "unguided", "w": 1.0, "interval": None}
    assert [(g["method"], g["w"], g["interval"]) for g in grid[1:4]] == [
        ("cfg", 1.5, None), ("dog", 1.5, None), ("dog", 1.5, [500.0, 999.0])]
    assert len(grid) == 7 and len(settings_grid(DemoConfig(w=[2.0], dog_interval=None))) == 3
    import hashlib

    from domain_guidance.io.data import load_builtin
    from domain_guidance.pipelines.demo.floors import target_data

    ref = np.zeros((4, 16, 16, 1), dtype=np.uint8)
    # the pool of class 6, counted here by the documented rule: train images whose sha1 (as an integer) is
    # < 11 mod 20 (the judge never trains on them), minus the fine-tuning images (by content)
    sha = lambda im: hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest()
    train = load_builtin("animal-mnist", resolution=16, channels=1, classes=[6], split="train").images
    tuned = {sha(im) for im in np.asarray(target_data(DemoConfig(target="animal"), 16)[0].images)}
    pool = {sha(im) for im in train if int(sha(im), 16) % 20 < 11} - tuned
    per_rep = sum(int(sha(im), 16) % 20 < 11 and sha(im) not in tuned for im in train) // 2
    assert 190 < per_rep < 240  # (about 55% of 800, minus the fine-tuning share) over 2 replicates
    sets = floor_sets(DemoConfig(target="animal", seeds=[0, 1]), ref, [per_rep, 1, 0, 2], 16)
    assert [np.bincount(y, minlength=4).tolist() for _, y in sets] == [[per_rep, 1, 0, 2]] * 2
    drawn = [sha(im[..., 0]) for images, y in sets for im in images[y == 0]]
    assert len(set(drawn)) == len(drawn) and set(drawn) <= pool  # disjoint replicates, all from the judge-free pool
    with pytest.raises(ValueError, match=f"needs {per_rep + 1} images of target class 6 per seed replicate"):
        floor_sets(DemoConfig(target="animal", seeds=[0, 1]), ref, [per_rep + 1, 1, 1, 1], 16)


def test_the_judge_does_not_depend_on_the_callers_random_state(tmp_path: Path) -> None:
    torch.manual_seed(1)
    a, _ = judge.train_classifier(tmp_path / "a", 16, 0.05, 32, progress=False)
    torch.manual_seed(2)
    torch.rand(100)  # the caller used the global RNG differently before asking for the judge
    b, _ = judge.train_classifier(tmp_path / "b", 16, 0.05, 32, progress=False)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
