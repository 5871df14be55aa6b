"""The evaluate() API: sources, metrics, cached references, result JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from domain_guidance.pipelines.metrics import evaluate
from domain_guidance.pipelines.metrics.stats import compute_stats, save_stats
from tests.metrics.helpers import random_images, write_folder

ALL_INCEPTION = ("fid", "kid", "prdc")


def test_set_against_itself(tmp_path, tiny_extractor):
    imgs = random_images(40, seed=0)
    ref = write_folder(tmp_path / "ref", imgs)
    out = evaluate(imgs, ref, ALL_INCEPTION, extractors={"inception": tiny_extractor},
                   batch_size=16, kid_subsets=5, output=tmp_path / "res" / "result.json")
    m = out["metrics"]
    assert m["fid"] == pytest.approx(0.0, abs=1e-8)
    assert m["precision"] == m["recall"] == m["coverage"] == 1.0
    assert m["kid_subset_size"] == 40 and abs(m["kid_mean"]) < 1e-3
    assert out["protocol"]["inception"] == tiny_extractor.protocol()
    assert out["samples"]["image_set_sha256"] == out["reference"]["inception"]["image_set_sha256"]
    assert json.loads((tmp_path / "res" / "result.json").read_text()) == json.loads(json.dumps(out))


def test_different_sets_and_stats_reference(tmp_path, tiny_extractor):
    a, b = random_images(30, seed=1), random_images(30, seed=2) // 2  # b is darker
    stats_path = save_stats(tmp_path / "ref_stats.npz", compute_stats(a, tiny_extractor))
    from_images = evaluate(b, a, ("fid", "prdc"), extractors={"inception": tiny_extractor})
    from_stats = evaluate(b, stats_path, ("fid", "prdc"), extractors={"inception": tiny_extractor})
    assert from_images["metrics"]["fid"] > 0.1
    assert from_stats["metrics"] == from_images["metrics"]
    assert from_stats["reference"]["inception"]["kind"] == "stats"


def test_reference_cache_folder(tmp_path, tiny_extractor):
    ref = write_folder(tmp_path / "ref", random_images(16, seed=3))
    kw = dict(metrics=("fid",), extractors={"inception": tiny_extractor}, reference_cache=tmp_path / "cache")
    first = evaluate(random_images(16, seed=4), ref, **kw)
    assert len(list((tmp_path / "cache").glob("inception-*.npz"))) == 1
    second = evaluate(random_images(16, seed=4), ref, **kw)
    assert second["reference"]["inception"]["kind"] == "images (cached)"
    assert second["metrics"] == first["metrics"]
    other = write_folder(tmp_path / "ref2", random_images(16, seed=5))
    evaluate(random_images(16, seed=4), other, **kw)  # another reference: its own cache file
    assert len(list((tmp_path / "cache").glob("inception-*.npz"))) == 2


def test_input_errors(tiny_extractor):
    with pytest.raises(ValueError, match="unknown or no metrics"):
        evaluate(random_images(4), random_images(4), ("fidd",))
    with pytest.raises(ValueError, match="at least 2 sample images"):
        evaluate(random_images(1), random_images(4), extractors={"inception": tiny_extractor})


@pytest.mark.filterwarnings("ignore:only .* images:RuntimeWarning")
def test_real_inception_end_to_end(inception, tmp_path):
    a, b = random_images(6, h=32, w=32, seed=5), random_images(6, h=32, w=32, seed=6)
    # fd_method="eigh": scipy's sqrtm of a 2048 x 2048 product takes 10-70 s on this CPU
    out = evaluate(a, b, ("fid",), extractors={"inception": inception}, batch_size=6, fd_method="eigh")
    assert np.isfinite(out["metrics"]["fid"]) and out["metrics"]["fid"] > 0
    assert out["protocol"]["inception"]["feature_dim"] == 2048 and out["settings"]["fd_method"] == "eigh"
    assert len(out["protocol"]["inception"]["weights_sha256"]) == 64


@pytest.mark.filterwarnings("ignore:only .* images:RuntimeWarning")
def test_dinov2_metrics_with_tiny_model(tiny_dinov2_dir):
    a = random_images(12, h=20, w=20, seed=7)
    out = evaluate(a, a, ("fd_dinov2", "prdc_dinov2", "kid_dinov2"), dinov2_model=tiny_dinov2_dir,
                   kid_subsets=3)
    m = out["metrics"]
    assert m["fd_dinov2"] == pytest.approx(0.0, abs=1e-6)
    assert m["precision_dinov2"] == m["coverage_dinov2"] == 1.0
    assert "kid_dinov2_mean" in m and out["protocol"]["dinov2"]["feature_dim"] == 32
