"""Statistics cache: round trip, atomic writes, refusal of another protocol."""
from __future__ import annotations

import numpy as np
import pytest

from domain_guidance.pipelines.metrics.stats import (
    atomic_write, cached_stats, compute_stats, load_stats, save_stats,
)
from tests.metrics.helpers import TinyExtractor, random_images, write_folder


def test_round_trip(tmp_path, tiny_extractor):
    imgs = random_images(20, seed=0)
    stats = compute_stats(imgs, tiny_extractor, batch_size=6)
    assert stats.num_images == 20 and stats.features.shape == (20, 12)
    np.testing.assert_allclose(stats.sigma, np.cov(stats.features.astype(np.float64), rowvar=False),
                               rtol=1e-6, atol=1e-12)
    path = save_stats(tmp_path / "ref.npz", stats)
    back = load_stats(path, expected=tiny_extractor.protocol())
    assert back.protocol == stats.protocol
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    np.testing.assert_array_equal(back.features, stats.features)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_protocol_mismatch_is_refused_with_fields(tmp_path, tiny_extractor):
    path = save_stats(tmp_path / "ref.npz", compute_stats(random_images(16), tiny_extractor))
    other = TinyExtractor(weights_tag="w1").protocol()
    other["preprocess"] = "something else"
    with pytest.raises(ValueError, match="weights_sha256: cached 'w0' != requested 'w1'") as e:
        load_stats(path, expected=other)
    assert "preprocess" in str(e.value) and "feature_dim" not in str(e.value)


def test_cache_reused_then_refused_for_other_images(tmp_path, tiny_extractor):
    folder = write_folder(tmp_path / "imgs", random_images(16, seed=1))
    cache = tmp_path / "cache" / "ref.npz"
    first = cached_stats(cache, folder, tiny_extractor, batch_size=4)
    calls = tiny_extractor.calls
    again = cached_stats(cache, folder, tiny_extractor, batch_size=4)
    assert tiny_extractor.calls == calls  # loaded, not recomputed
    np.testing.assert_array_equal(first.mu, again.mu)
    write_folder(tmp_path / "imgs", random_images(1, seed=9))  # overwrites 000.png
    with pytest.raises(ValueError, match="image_set_sha256"):
        cached_stats(cache, folder, tiny_extractor, batch_size=4)


def test_features_required_but_absent(tmp_path, tiny_extractor):
    stats = compute_stats(random_images(16), tiny_extractor, keep_features=False)
    path = save_stats(tmp_path / "s.npz", stats)
    with pytest.raises(ValueError, match="no per-image features"):
        load_stats(path, need_features=True)


def test_not_a_stats_file(tmp_path):
    np.savez(tmp_path / "imgs.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="not a statistics file"):
        load_stats(tmp_path / "imgs.npz")


def test_too_few_images(tiny_extractor):
    with pytest.raises(ValueError, match="at least 2 images"):
        compute_stats(random_images(1), tiny_extractor)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write(target, lambda fh: fh.write(b"good"))

    def broken(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"good" and list(tmp_path.iterdir()) == [target]
