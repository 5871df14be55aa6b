"""VAE wrapper on a tiny AutoencoderKL saved to disk."""
from __future__ import annotations

import pytest
import torch

from domain_guidance.io.vae import VAE


def test_encode_decode_shapes_and_conventions(tiny_vae):
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    mean, std = tiny_vae.encode(x, batch_size=2)
    assert mean.shape == std.shape == (5, 4, 8, 8) and mean.dtype == torch.float32 and (std > 0).all()
    ref = tiny_vae.model.encode(x).latent_dist
    torch.testing.assert_close(mean, ref.mean, atol=1e-5, rtol=1e-5)  # unscaled, batch-size independent
    torch.testing.assert_close(std, ref.std, atol=1e-5, rtol=1e-5)
    z = tiny_vae.encode_sample(x, torch.Generator().manual_seed(0))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, (mean + std * noise) * 0.18215)
    img = tiny_vae.decode(z, batch_size=3)
    assert img.shape == (5, 3, 16, 16) and img.min() >= -1 and img.max() <= 1
    with torch.no_grad():
        ref_img = tiny_vae.model.decode(z / 0.18215).sample.clamp(-1, 1)
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=1e-5)


def test_properties_and_fingerprint(tiny_vae_dir):
    vae = VAE.from_pretrained(tiny_vae_dir, scale=0.5)
    assert (vae.scale, vae.latent_channels, vae.in_channels, vae.downsample) == (0.5, 4, 3, 2)
    assert vae.source == str(tiny_vae_dir) and not any(p.requires_grad for p in vae.model.parameters())
    fp = vae.fingerprint
    assert fp == VAE.from_pretrained(tiny_vae_dir).fingerprint
    other = VAE.from_pretrained(tiny_vae_dir)
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    other._fingerprint = None
    assert other.fingerprint != fp


def test_bad_inputs(tiny_vae):
    with pytest.raises(ValueError, match=r"expects images \(N, 3, H, W\)"):
        tiny_vae.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible by 2"):
        tiny_vae.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match=r"expects latents \(N, 4, h, w\)"):
        tiny_vae.decode(torch.zeros(1, 3, 8, 8))


@pytest.mark.filterwarnings("ignore:.*local_dir_use_symlinks")
def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VAE.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VAE.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="unreachable when offline.*local directory"):
        VAE.from_pretrained("nobody-here/no-such-vae", local_files_only=True)  # no network attempt
