"""Feature extraction at a precision: recorded in the protocol, never mixed with fp32 statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from domain_guidance.pipelines.metrics import evaluate
from domain_guidance.pipelines.metrics.inception import InceptionExtractor


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)  # (N, H, W, C)


@pytest.fixture(scope="module")
def bf16_inception():
    return InceptionExtractor(precision="bf16")


@pytest.mark.slow  # bf16 Inception on a CPU without native bf16: minutes
def test_bf16_features_close_to_fp32_and_recorded(inception, bf16_inception):
    x = torch.from_numpy(_images(3, 0)).permute(0, 3, 1, 2)  # (3, 3, 16, 16) uint8
    ref, low = inception(x), bf16_inception(x)
    assert low.dtype == torch.float32 and low.shape == (3, 2048)
    rel = float((low - ref).norm() / ref.norm())
    assert 0 < rel < 0.05  # bf16 moves the features a little
    assert "precision" not in inception.protocol()  # fp32: the reference protocol, as before
    assert bf16_inception.protocol()["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision: tf32 .* CPU"):
        InceptionExtractor(precision="tf32")


@pytest.mark.slow
def test_cached_reference_statistics_are_kept_apart(inception, bf16_inception, tmp_path):
    samples, reference = _images(4, 1), _images(5, 2)
    cache = tmp_path / "cache"
    a = evaluate(samples, reference, ["fid"], reference_cache=cache, fd_method="eigh",
                 extractors={"inception": inception})
    b = evaluate(samples, reference, ["fid"], reference_cache=cache, fd_method="eigh",
                 extractors={"inception": bf16_inception})
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 2 and sum(n.endswith("-bf16.npz") for n in names) == 1
    assert b["protocol"]["inception"]["precision"] == "bf16" and "precision" not in a["protocol"]["inception"]
    assert a["metrics"]["fid"] != b["metrics"]["fid"]
    # the fp32 cache is reused by an fp32 run (same number), not recomputed into the bf16 file
    again = evaluate(samples, reference, ["fid"], reference_cache=cache, fd_method="eigh",
                     extractors={"inception": inception})
    assert again["metrics"]["fid"] == a["metrics"]["fid"]
