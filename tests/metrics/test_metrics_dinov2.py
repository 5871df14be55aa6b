"""DINOv2 extractor with a tiny random model: preprocessing (dgm-eval) and features."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from domain_guidance.pipelines.metrics.dinov2 import (
    IMAGENET_MEAN, IMAGENET_STD, Dinov2Extractor, hub_pos_encoding, preprocess,
)
from tests.metrics.helpers import random_images


def test_constant_image_normalises_exactly():
    x = preprocess(torch.full((1, 3, 30, 40), 128, dtype=torch.uint8))
    assert x.shape == (1, 3, 224, 224)
    want = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[0, :, 100, 100], want, atol=1e-6, rtol=0)


def test_pil_bicubic_close_to_torch_antialiased_bicubic():
    imgs = random_images(2, h=64, w=48, seed=1)
    ours = preprocess(imgs) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    torch_rs = F.interpolate(imgs.float() / 255, size=(224, 224), mode="bicubic", align_corners=False,
                             antialias=True).clamp(0, 1)
    assert (ours - torch_rs).abs().mean() < 0.01  # same filter family, not bit-identical


def written_out_hub_rule(pos_embed: torch.Tensor, w: int, h: int, patch_size: int) -> torch.Tensor:
    """The torch.hub DINOv2's ``interpolate_pos_encoding`` written out (x's patch count taken from w, h;
    interpolate_offset 0.1, interpolate_antialias False; ``w`` is the input's dim 2 as the hub names it)."""
    npatch = (w // patch_size) * (h // patch_size)
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch_size, h // patch_size
    M = int(math.sqrt(N))
    sx, sy = float(w0 + 0.1) / M, float(h0 + 0.1) / M
    patch_pos_embed = F.interpolate(patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2), mode="bicubic",
                                    antialias=False, scale_factor=(sx, sy))
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def _rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def test_position_embeddings_follow_the_hub_rule(tmp_path):
    """ViT-L/14's 37 x 37 grid (image_size 518) at 224 px: the hub's (16 + 0.1) / 37, not transformers' (16, 16)."""
    torch.manual_seed(0)
    net = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                   image_size=518, patch_size=14))
    with torch.no_grad():  # a smooth, non-trivial grid, as trained embeddings are
        yy, xx = torch.meshgrid(torch.linspace(0, 3, 37), torch.linspace(0, 3, 37), indexing="ij")
        grid = torch.stack([torch.sin(xx * (k + 1) / 4 + yy * k / 5) for k in range(32)], dim=-1)  # (37, 37, 32)
        net.embeddings.position_embeddings[:, 1:] = grid.reshape(1, 37 * 37, 32)
    pos = net.embeddings.position_embeddings.detach()  # (1, 1 + 37*37, 32)
    for h, w in [(224, 224), (224, 168), (518, 518)]:
        torch.testing.assert_close(hub_pos_encoding(pos, h, w, (14, 14)), written_out_hub_rule(pos, h, w, 14),
                                   atol=0, rtol=0)
    net.save_pretrained(tmp_path / "vitl-grid")
    ext = Dinov2Extractor(tmp_path / "vitl-grid")
    emb = torch.zeros(1, 1 + 16 * 16, 32)
    ours = ext.model.embeddings.interpolate_pos_encoding(emb, 224, 224)  # what the extractor adds
    hub = written_out_hub_rule(pos, 224, 224, 14)
    torch.testing.assert_close(ours, hub, atol=0, rtol=0)
    with torch.no_grad():
        plain = Dinov2Model.from_pretrained(tmp_path / "vitl-grid").embeddings.interpolate_pos_encoding(emb, 224, 224)
    assert _rel_rms(plain[:, 1:], hub[:, 1:]) > 0.01  # transformers' own rule is another resampling
    # and the features: the extractor equals a transformers model running the written-out hub rule
    imgs = random_images(2, h=30, w=30, seed=4)
    ref = Dinov2Model.from_pretrained(tmp_path / "vitl-grid").eval()
    ref.embeddings.interpolate_pos_encoding = lambda e, h, w: written_out_hub_rule(
        ref.embeddings.position_embeddings, h, w, 14)
    with torch.no_grad():
        want = ref(pixel_values=preprocess(imgs)).pooler_output
    torch.testing.assert_close(ext(imgs), want, atol=1e-5, rtol=1e-5)
    assert "0.1" in ext.protocol()["pos_encoding"]


def test_features_are_the_normed_cls_token(tiny_dinov2_dir):
    ext = Dinov2Extractor(tiny_dinov2_dir)
    imgs = random_images(3, h=24, w=24, seed=2)
    feats = ext(imgs)
    model = Dinov2Model.from_pretrained(tiny_dinov2_dir).eval()
    model.embeddings.interpolate_pos_encoding = lambda e, h, w: written_out_hub_rule(
        model.embeddings.position_embeddings, h, w, 14)  # the hub's rule, as the extractor runs it
    with torch.no_grad():
        hidden = model(pixel_values=preprocess(imgs)).last_hidden_state  # (3, 1 + 256, 32), normed
    torch.testing.assert_close(feats, hidden[:, 0], atol=1e-5, rtol=1e-5)
    assert torch.equal(ext(imgs[:, :1]), ext(imgs[:, :1].repeat(1, 3, 1, 1)))  # gray -> RGB
    assert ext.protocol()["feature_dim"] == 32 and len(ext.weights_sha256) == 64


def test_clean_resize_differs_slightly():
    imgs = random_images(1, h=24, w=24, seed=3)
    diff = (preprocess(imgs, clean_resize=True) - preprocess(imgs)).abs() * IMAGENET_STD[0]
    assert 0 < diff.mean() < 2 / 255  # uint8 rounding and clipping of the bicubic overshoot


def test_missing_model_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not load DINOv2"):
        Dinov2Extractor(tmp_path / "no_such_model")
