"""What every feature extractor offers the metrics pipeline, and helpers shared by them."""
from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

import torch

from ...core.precision import check_precision, precision_context  # noqa: F401  (re-exported for the extractors)


@runtime_checkable
class FeatureExtractor(Protocol):
    """A frozen network that maps uint8 images to one feature vector per image."""

    name: str
    feature_dim: int

    def protocol(self) -> dict[str, Any]:
        """JSON-able description (name, weights hash, preprocessing) that a score depends on."""
        ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 images -> (N, feature_dim) float32 features on the CPU."""
        ...


def extraction_precision(precision: str) -> dict[str, Any]:
    """The protocol entry of a feature precision: none for fp32 (the reference protocol, so statistics
    cached before precisions existed stay valid), ``{"precision": name}`` otherwise."""
    return {} if precision == "fp32" else {"precision": precision}


def check_images(images: torch.Tensor, who: str) -> torch.Tensor:
    """Validate a batch and return it as float32 in [0, 1] with 3 channels.

    Accepted: uint8 in [0, 255] or a floating tensor in [0, 1], shape (N, C, H, W) with C = 1
    or 3. One channel is converted to RGB by repeating it three times (the same result as
    PIL's ``convert("RGB")`` of an "L" image).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor of images, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{who}: expected images of shape (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        x = images.float() / 255.0  # (N, C, H, W) in [0, 1]
    elif images.is_floating_point():
        x = images.float()
        if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise ValueError(
                f"{who}: float images must be in [0, 1], got values in "
                f"[{x.min().item():.4g}, {x.max().item():.4g}] (pass uint8 for [0, 255])"
            )
    else:
        raise TypeError(f"{who}: expected uint8 or float images, got dtype {images.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # (N, 3, H, W) grayscale -> RGB by repetition
    return x


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's weights: every parameter and buffer (name, dtype, shape, bytes).

    Hashing the loaded tensors rather than a file makes the hash independent of where the
    weights came from (a .pth file or the TorchScript archive give the same hash when the
    numbers agree). ``num_batches_tracked`` counters are skipped: they do not affect eval.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if name.endswith("num_batches_tracked"):
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        t = t.detach().to("cpu").contiguous().reshape(-1)  # (numel,)
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
