"""Latent cache: round trip, flips, seeded posterior samples, staleness, atomic writes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from domain_guidance.io.data import (ArrayImageDataset, LatentDataset, SeededKeySampler, StaleCacheError,
                                     build_latent_cache, cached_latents, expected_metadata, read_cache_metadata)
from domain_guidance.io.data import latent_cache as lc
from domain_guidance.io.data.common import hflip


def make_dataset(n: int = 6, seed: int = 0, channels: int = 3) -> ArrayImageDataset:
    rng = np.random.default_rng(seed)
    shape = (n, 16, 16, channels) if channels == 3 else (n, 16, 16)
    return ArrayImageDataset(rng.integers(0, 256, shape, dtype=np.uint8), np.arange(n) % 2, ["a", "b"])


def test_round_trip_and_flip_entries(tiny_vae, tmp_path):
    ds = make_dataset()
    path = build_latent_cache(ds, tiny_vae, tmp_path / "c.safetensors", batch_size=4)
    meta = read_cache_metadata(path)
    assert meta["count"] == 6 and meta["resolution"] == 16 and meta["latent_shape"] == [4, 8, 8]
    assert meta["vae_fingerprint"] == tiny_vae.fingerprint and meta["dataset_fingerprint"] == ds.fingerprint
    assert (tmp_path / "c.safetensors.json").is_file()
    lat = LatentDataset(path, expected=expected_metadata(ds, tiny_vae))
    assert len(lat) == 6 and lat.latent_shape == (4, 8, 8) and lat.class_names == ["a", "b"]
    x = torch.stack([ds.load(i) for i in range(6)])
    mean, std = tiny_vae.encode(x)
    mean_f, std_f = tiny_vae.encode(hflip(x))
    torch.testing.assert_close(lat.mean, mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lat.std, std, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lat.mean_flip, mean_f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lat.std_flip, std_f, atol=1e-5, rtol=1e-5)
    z, y = lat[3]
    torch.testing.assert_close(z, mean[3] * 0.18215, atol=1e-5, rtol=1e-5)
    assert y == 1


def test_seeded_posterior_sample(tiny_vae, tmp_path):
    ds = make_dataset()
    lat = cached_latents(ds, tiny_vae, tmp_path / "c.safetensors")
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        flip = bool(torch.rand((), generator=g) < 0.5)
        noise = torch.randn(4, 8, 8, generator=g)
        m, s = (lat.mean_flip, lat.std_flip) if flip else (lat.mean, lat.std)
        z, _ = lat[(2, seed)]
        torch.testing.assert_close(z, (m[2] + s[2] * noise) * lat.scale)
        assert torch.equal(z, lat[(2, seed)][0])
        # an explicit flip keeps the same noise
        z_unflipped, _ = lat[(2, seed, False)]
        torch.testing.assert_close(z_unflipped, (lat.mean[2] + lat.std[2] * noise) * lat.scale)
    assert not torch.equal(lat[(2, 0)][0], lat[(2, 1)][0])
    batch = torch.stack([lat[k][0] for k in SeededKeySampler(len(lat), seed=1)])
    assert batch.shape == (6, 4, 8, 8)


def test_reuse_and_stale_detection(tiny_vae, tiny_vae_dir, tmp_path):
    path = tmp_path / "c.safetensors"
    ds = make_dataset()
    build_latent_cache(ds, tiny_vae, path)
    stamp = os.stat(path).st_mtime_ns
    build_latent_cache(ds, tiny_vae, path, on_stale="error")  # fresh: nothing rewritten
    assert os.stat(path).st_mtime_ns == stamp
    other = make_dataset(seed=1)
    with pytest.raises(StaleCacheError, match="dataset_fingerprint"):
        build_latent_cache(other, tiny_vae, path, on_stale="error")
    with pytest.raises(StaleCacheError, match="stale.*dataset_fingerprint"):
        LatentDataset(path, expected=expected_metadata(other, tiny_vae))
    build_latent_cache(other, tiny_vae, path)  # rebuild
    assert read_cache_metadata(path)["dataset_fingerprint"] == other.fingerprint
    from domain_guidance.io.vae import VAE

    vae2 = VAE.from_pretrained(tiny_vae_dir)
    with torch.no_grad():
        next(vae2.model.parameters()).mul_(1.01)
    with pytest.raises(StaleCacheError, match="vae_fingerprint"):
        build_latent_cache(other, vae2, path, on_stale="error")


def test_failed_write_keeps_previous_file(tiny_vae, tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    build_latent_cache(make_dataset(), tiny_vae, path)
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(lc, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        build_latent_cache(make_dataset(seed=2), tiny_vae, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors", "c.safetensors.json"]


def test_float16_storage_and_errors(tiny_vae, tmp_path):
    ds = make_dataset()
    lat = cached_latents(ds, tiny_vae, tmp_path / "h.safetensors", dtype=torch.float16)
    assert lat.mean.dtype == torch.float16 and lat[(0, 0)][0].dtype == torch.float32
    with pytest.raises(ValueError, match="channels=3"):
        build_latent_cache(make_dataset(channels=1), tiny_vae, tmp_path / "g.safetensors")
    with pytest.raises(FileNotFoundError, match="build_latent_cache"):
        LatentDataset(tmp_path / "none.safetensors")
    with pytest.raises(IndexError):
        lat[6]
