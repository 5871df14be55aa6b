"""The default (fast) FID-Inception path against the reference path: the same features."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from domain_guidance.pipelines.metrics.inception import BasicConv2d, fold_batchnorm, preprocess
from tests.metrics.helpers import random_images

# Fast vs reference, float32 (AVX2 CPU, torch 2.13): max 6.6e-6 on these images (features up to 5),
# 1.7e-5 over 200 animal-mnist images (features up to 7.5); folding with eps 1e-5 instead gives 0.52.
FAST_TOL = 3e-5


def _test_images() -> torch.Tensor:
    """Two random gray 16 px images and a smooth one (a dark blob on white, like the datasets')."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = 255 * (1 - torch.exp(-((yy - 7) ** 2 + (xx - 9) ** 2) / 18))  # (16, 16)
    smooth = blob.round().to(torch.uint8)[None, None]  # (1, 1, 16, 16)
    return torch.cat([random_images(2, c=1, h=16, w=16, seed=7), smooth])  # (3, 1, 16, 16) uint8


def test_fast_path_features_match_reference(inception):
    assert inception.fast and inception.fast_model is not None  # the default is the fast path
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in inception.fast_model.modules())
    assert inception.fast_model.Conv2d_1a_3x3.conv.weight.is_contiguous(memory_format=torch.channels_last)
    imgs = _test_images()
    fast = inception(imgs)  # (3, 2048) through fast_model, channels-last
    with torch.inference_mode():
        ref = inception.model(preprocess(imgs))  # the network as loaded, NCHW
    assert fast.shape == ref.shape == (3, 2048)
    assert ref.abs().max().item() > 1.0  # real features, not an all-zero degenerate output
    assert (fast - ref).abs().max().item() < FAST_TOL
    assert inception.model.Conv2d_1a_3x3.conv.bias is None  # the reference network is untouched


def test_fold_batchnorm_is_exact_in_float64():
    torch.manual_seed(0)
    block = BasicConv2d(3, 8, (3, 1), stride=2, padding=(1, 0)).double().eval()
    with torch.no_grad():
        block.conv.weight.normal_()
        block.bn.weight.uniform_(0.5, 2.0)  # a scale: the TF weights have gamma = 1 only
        block.bn.bias.normal_()
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.1, 3.0)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    fused = fold_batchnorm(block)
    assert isinstance(fused.bn, torch.nn.Identity) and isinstance(block.bn, torch.nn.BatchNorm2d)
    with torch.no_grad():
        expected = torch.clamp(
            (F.conv2d(x, block.conv.weight, stride=2, padding=(1, 0)) - block.bn.running_mean[:, None, None])
            / torch.sqrt(block.bn.running_var[:, None, None] + 1e-3) * block.bn.weight[:, None, None]
            + block.bn.bias[:, None, None], min=0)  # (2, 8, 5, 7)
        got = fused(x)
    assert (expected > 0).any() and (expected == 0).any()  # both sides of the ReLU are exercised
    assert (got - expected).abs().max().item() < 1e-12


def test_gray_preprocessing_is_exactly_the_rgb_one_in_both_layouts():
    gray = random_images(2, c=1, h=16, w=16, seed=5)
    expected = 2 * F.interpolate(gray.repeat(1, 3, 1, 1).float() / 255, size=(299, 299), mode="bilinear",
                                 align_corners=False) - 1  # (2, 3, 299, 299)
    nchw, nhwc = preprocess(gray), preprocess(gray, torch.channels_last)
    assert torch.equal(nchw, expected) and torch.equal(nhwc, expected)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
