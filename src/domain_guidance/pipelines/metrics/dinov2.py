"""FD_DINOv2 features: DINOv2 ViT-L/14 CLS token through ``transformers.Dinov2Model``.

Preprocessing follows dgm-eval (layer6ai-labs/dgm-eval, ``DINOv2Encoder.transform``) without
torchvision: each image is converted to RGB (grayscale repeated) and resized to 224 x 224 with
PIL's bicubic filter on the uint8 image (what ``torchvision.transforms.Resize((224, 224),
BICUBIC)`` does to a PIL image), then /255 and ImageNet mean/std normalisation. We use PIL
rather than ``F.interpolate(mode="bicubic", antialias=True)``: torch's filter is close to but
not bit-identical with PIL's, and PIL is what the reference runs. ``clean_resize=True`` gives
dgm-eval's other mode (PIL bicubic per channel in float, clip to [0, 255], no uint8 rounding).

The feature is the CLS token of the final layer-normed hidden states (``pooler_output``, the
same as the hub model's ``x_norm_clstoken``), 1024-d for ViT-L.

Position embeddings: dgm-eval loads the torch.hub DINOv2, which resizes its 37 x 37 grid of position
embeddings to the 16 x 16 patch grid of a 224 px input with ``scale_factor = (16 + 0.1) / 37``
(bicubic, no antialias); transformers' ``Dinov2Model`` resizes to ``size = (16, 16)``, a different
resampling (about 5% relative RMS apart on the embeddings). ``hub_pos_encoding`` is the hub's rule,
and every extractor built here uses it (docs/protocols.md).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from domain_guidance.pipelines.metrics.extractor import module_sha256

DEFAULT_MODEL = "facebook/dinov2-large"
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATE_OFFSET = 0.1  # the torch.hub DINOv2's interpolate_offset (its interpolate_antialias is False)
POS_ENCODING = "torch.hub rule: bicubic, scale_factor (grid + 0.1) / 37, no antialias"


def hub_pos_encoding(pos_embed: torch.Tensor, height: int, width: int, patch: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + M*M, D) position embeddings -> (1, 1 + gh*gw, D) for a ``height`` x ``width`` input, as the
    torch.hub DINOv2 computes them (gh = height // patch[0]; scale factors (gh + 0.1) / M, (gw + 0.1) / M)."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"DINOv2 position embeddings: {n} patch positions is not a square grid")
    gh, gw = height // patch[0], width // patch[1]
    if gh * gw == n and height == width:
        return pos_embed
    pos = pos_embed.float()
    grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)  # (1, D, M, M)
    grid = F.interpolate(grid, scale_factor=((gh + INTERPOLATE_OFFSET) / m, (gw + INTERPOLATE_OFFSET) / m),
                         mode="bicubic", antialias=False)  # (1, D, gh, gw)
    if tuple(grid.shape[-2:]) != (gh, gw):
        raise ValueError(f"DINOv2 position embeddings: resized to {tuple(grid.shape[-2:])}, expected {(gh, gw)}")
    patches = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)  # (1, gh*gw, D)
    return torch.cat([pos[:, :1], patches], dim=1).to(pos_embed.dtype)


def use_hub_pos_encoding(net: Any) -> None:
    """Make a transformers ``Dinov2Model`` interpolate its position embeddings by the hub rule."""
    emb = net.embeddings
    patch = tuple(emb.patch_embeddings.patch_size)

    def interpolate(embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return hub_pos_encoding(emb.position_embeddings, height, width, patch).to(embeddings.dtype)

    emb.interpolate_pos_encoding = interpolate  # the instance attribute wins over the class method


def _resize_one(img: np.ndarray, clean: bool) -> np.ndarray:
    """(H, W, 3) uint8 -> (224, 224, 3) float32 in [0, 1] (PIL infers mode RGB / F)."""
    size = (INPUT_SIZE, INPUT_SIZE)
    if not clean:
        out = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC))
        return out.astype(np.float32) / 255.0
    chans = [np.asarray(Image.fromarray(img[:, :, c].astype(np.float32))
                        .resize(size, Image.Resampling.BICUBIC)).clip(0, 255) for c in range(3)]
    return np.stack(chans, axis=2).astype(np.float32) / 255.0


def preprocess(images: torch.Tensor, clean_resize: bool = False) -> torch.Tensor:
    """(N, C, H, W) uint8, C = 1 or 3 -> (N, 3, 224, 224) float32, ImageNet-normalised."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"DINOv2 preprocessing expects uint8 images (N, C, H, W) with C = 1 or 3, "
            f"got dtype {images.dtype}, shape {tuple(images.shape)}"
        )
    x = images.cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # (N, 3, H, W) grayscale -> RGB
    arr = x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3)
    out = np.stack([_resize_one(a, clean_resize) for a in arr])  # (N, 224, 224, 3)
    t = torch.from_numpy(out).permute(0, 3, 1, 2)  # (N, 3, 224, 224)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((t - mean) / std).contiguous()


class Dinov2Extractor:
    """DINOv2 CLS features from a local directory or a hub id (``facebook/dinov2-large``)."""

    name = "dinov2-cls-hubpos"  # renamed with the hub position rule: statistics cached before are recomputed

    def __init__(self, model: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu",
                 clean_resize: bool = False) -> None:
        from transformers import Dinov2Model

        self.device = torch.device(device)
        self.clean_resize = clean_resize
        self.model_source = str(model)
        try:
            net = Dinov2Model.from_pretrained(str(model))
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"could not load DINOv2 from {model!r}: pass a local directory saved with "
                "save_pretrained (config.json + weights) or a hub id reachable from this machine "
                f"(default {DEFAULT_MODEL}). Cause: {e}"
            ) from e
        use_hub_pos_encoding(net)
        self.model = net.eval().requires_grad_(False).to(self.device)
        self.feature_dim = int(net.config.hidden_size)
        self.weights_sha256 = module_sha256(self.model)

    def protocol(self) -> dict[str, Any]:
        """What the features depend on (compared when cached statistics are reused)."""
        resize = "PIL bicubic float per channel (clean)" if self.clean_resize else "PIL bicubic uint8"
        return {"extractor": self.name, "weights_sha256": self.weights_sha256,
                "resize": f"{resize} 224x224",
                "preprocess": f"RGB; {resize} to 224x224; /255; ImageNet mean/std (dgm-eval)",
                "feature_dim": self.feature_dim, "pos_encoding": POS_ENCODING}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images, self.clean_resize).to(self.device)  # (N, 3, 224, 224)
        return self.model(pixel_values=x).pooler_output.float().cpu()  # (N, D)
