"""The published networks at full size with random weights, written where the real pipeline reads them.

A dry run (``dry_run``) cannot download the pre-trained weights, so it writes stand-ins of the exact
published architectures: the base DiT-XL/2 / SiT-XL/2 as an official raw ``.pt`` state dict
(1000 classes + null: a 1001-row label table), sd-vae-ft-ema's ``AutoencoderKL`` config and
facebook/dinov2-large's ``Dinov2Config`` as ``save_pretrained`` folders. Every tensor is random
(N(0, 0.02), DiT's position embeddings stay sin-cos): unlike DiT's adaLN-Zero initialisation, the
networks then compute something non-trivial, so a NaN or a shape slip shows. The FID Inception keeps
the shipped real weights (they are local). ``PUBLISHED_PARAMS`` holds the published parameter counts.
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core.models import DiT, dit_config
from ...core.models.dit import sincos_pos_embed

# stabilityai/sd-vae-ft-ema config.json (the architecture of every SD 1.x VAE)
SD_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu",
    norm_num_groups=32, sample_size=256)
# facebook/dinov2-large config.json (ViT-L/14, 518 px pre-training grid: 37 x 37 position embeddings)
DINOV2_LARGE_CONFIG: dict[str, Any] = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14, image_size=518,
    num_channels=3, layerscale_value=1.0, use_swiglu_ffn=False, qkv_bias=True, layer_norm_eps=1e-6,
    hidden_act="gelu", drop_path_rate=0.0)
# Published parameter counts: DiT's train.py log (pos_embed included; SiT shares the network), the VAE and
# DINOv2 (torch.hub dinov2_vitl14) model cards' counts, torchvision's Inception-v3 conv trunk (pool3).
PUBLISHED_PARAMS: dict[str, int] = {"DiT-XL/2": 675_129_632, "SiT-XL/2": 675_129_632, "sd-vae-ft-ema": 83_653_863,
                                    "dinov2-vitl14": 304_368_640, "fid-inception": 21_785_568}
LABEL_ROWS = 1001  # 1000 ImageNet classes + the null row
MODELS = {"dit": "DiT-XL/2", "sit": "SiT-XL/2"}
TRAIN_PRESETS = {"dit": "dit-xl2-imagenet-published", "sit": "sit-xl2-imagenet-published"}
LORA_PRESETS = {"dit": "dit-xl2-imagenet-lora", "sit": "sit-xl2-imagenet-lora"}


def param_count(module: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def randomize_(module: nn.Module, seed: int, std: float = 0.02, keep: tuple[str, ...] = ()) -> nn.Module:
    """In place, from ``seed``: every floating parameter ~ N(0, std), except the scales of LayerNorm /
    GroupNorm and DINOv2's layer scales (1: the signal keeps its size through the depth) and those named
    in ``keep`` (untouched). Buffers keep their values."""
    gen = torch.Generator().manual_seed(seed)
    for mod_name, mod in module.named_modules():
        for name, p in mod.named_parameters(recurse=False):
            if f"{mod_name}.{name}".lstrip(".") in keep or not p.is_floating_point():
                continue
            if (isinstance(mod, (nn.LayerNorm, nn.GroupNorm)) and name == "weight") or name.startswith("lambda"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)
    return module


def random_dit(model: str = "dit", seed: int = 0, device: str = "cpu") -> DiT:
    """A full-size DiT-XL/2 (``"dit"``) or SiT-XL/2 (``"sit"``) at 256 px, 1000 classes + null, random weights
    (``device="meta"``: the architecture only, no memory)."""
    if model not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {model!r}")
    cfg = dit_config(MODELS[model])
    with torch.device("meta"):  # skip DiT's own (xavier) initialisation: the weights are drawn below
        net = DiT(cfg)
    if device == "meta":
        return net.eval()
    net = net.to_empty(device=device)
    randomize_(net, seed, keep=("pos_embed",))
    net.pos_embed.copy_(sincos_pos_embed(cfg.hidden_size, *net.grid).unsqueeze(0))  # (1, T, D), as DiT's
    return net.eval()


def write_random_base(path: Path, model: str = "dit", seed: int = 0) -> dict[str, Any]:
    """The stand-in of ``DiT-XL-2-256x256.pt`` / ``SiT-XL-2-256x256.pt``: an official raw state dict."""
    net = random_dit(model, seed)
    info = {"path": str(path), "model": MODELS[model], "params": param_count(net),
            "label_rows": int(net.y_embedder.embedding_table.weight.shape[0])}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    del net
    gc.collect()
    return info


def random_vae(seed: int = 0, device: str = "cpu") -> nn.Module:
    """``diffusers.AutoencoderKL`` with sd-vae-ft-ema's config and random weights (its default initialisation)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    with torch.device(device):
        return AutoencoderKL(**SD_VAE_CONFIG).eval()


def vae_decode_flops(latent_size: int = 32) -> float:
    """FLOPs ``FlopCounterMode`` counts for decoding one latent of the sd-vae-ft-ema architecture (meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    vae = random_vae(device="meta")
    with FlopCounterMode(display=False) as counter:
        vae.decode(torch.empty(1, 4, latent_size, latent_size, device="meta"))
    return float(counter.get_total_flops())


def write_random_vae(folder: Path, seed: int = 0) -> dict[str, Any]:
    vae = random_vae(seed)
    vae.save_pretrained(folder)
    info = {"path": str(folder), "params": param_count(vae)}
    del vae
    return info


def random_dinov2(seed: int = 1, device: str = "cpu") -> nn.Module:
    """``transformers.Dinov2Model`` with facebook/dinov2-large's config and random weights."""
    from transformers import Dinov2Config, Dinov2Model

    with torch.device("meta"):  # transformers' own truncated-normal initialisation takes a minute on a CPU
        net = Dinov2Model(Dinov2Config(**DINOV2_LARGE_CONFIG))
    return net.eval() if device == "meta" else randomize_(net.to_empty(device=device), seed).eval()


def write_random_dinov2(folder: Path, seed: int = 1) -> dict[str, Any]:
    net = random_dinov2(seed)
    net.save_pretrained(folder)
    info = {"path": str(folder), "params": param_count(net)}
    del net
    gc.collect()
    return info


def inception_params() -> int:
    """Parameters of the FID Inception port (architecture only: built on the meta device)."""
    from ..metrics.inception import FIDInceptionV3

    with torch.device("meta"):
        return param_count(FIDInceptionV3())
