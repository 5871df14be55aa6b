"""DINOv2 extractor with a tiny random model: preprocessing (dgm-eval) and features."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Model

from domain_guidance.pipelines.metrics.dinov2 import (
    IMAGENET_MEAN, IMAGENET_STD, Dinov2Extractor, preprocess,
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


def test_features_are_the_normed_cls_token(tiny_dinov2_dir):
    ext = Dinov2Extractor(tiny_dinov2_dir)
    imgs = random_images(3, h=24, w=24, seed=2)
    feats = ext(imgs)
    model = Dinov2Model.from_pretrained(tiny_dinov2_dir).eval()
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
