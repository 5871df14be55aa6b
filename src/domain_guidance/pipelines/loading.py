"""Load a fine-tuned model and its guide as Denoisers, and the decoder of their input space.

This is the notebook API:

    ft, guide = load_denoisers("runs/food/checkpoints/latest", guide="DiT-XL-2-256x256.pt")
    dog = build_guided_denoiser("dog", ft, guide, scale=1.5)
    x = sample_from_seeds(dog, seeds=[0, 1, 2], labels=torch.tensor([0, 1, 2]), shape=ft.shape)
"""
from __future__ import annotations

from typing import Callable

import torch

from ..core.denoiser import Denoiser
from ..core.models.adapters import has_adapter
from ..core.models.config import DiTConfig
from ..io.checkpoints import load_model


def load_denoisers(model: str, guide: str | None = None, which: str = "ema",
                   device: torch.device | str = "cpu") -> tuple[Denoiser, Denoiser | None]:
    """(fine-tuned Denoiser, guide Denoiser or None).

    A LoRA checkpoint brings its own guide: the same network with the adapter off, using the
    pre-trained config (its label table and null label). Otherwise ``guide`` is a separate
    checkpoint, always built from its own config (never from the fine-tuned one).
    """
    net, config, info = load_model(model, which=which)
    net = net.to(device)
    ft = Denoiser(net, config)
    if has_adapter(net):
        if guide is not None:
            raise ValueError(f"{model} is a LoRA fine-tune whose guide is its own base network; "
                             "do not pass a separate guide")
        return ft, Denoiser(net, info["base_config"], adapter=False)
    if guide is None:
        return ft, None
    guide_net, guide_config, _ = load_model(guide, which=which)
    return ft, Denoiser(guide_net.to(device), guide_config)


def model_shape(config: DiTConfig) -> tuple[int, int, int]:
    """(C, H, W) of the model's input space."""
    return (config.in_channels, *config.grid_hw_pixels)


def make_decoder(config: DiTConfig, vae: str | None = None, scale: float | None = None,
                 device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Decoder from model space to images in [-1, 1]: a VAE for latent models, None for pixels."""
    if not config.latent:
        return None
    from ..io.vae import VAE  # diffusers is heavy: import only for latent models

    source = vae or config.vae
    if source is None:
        raise ValueError("latent model without a VAE: pass --vae PATH_OR_ID")
    decoder = VAE.from_pretrained(source, scale=scale if scale is not None else config.latent_scale, device=device)
    return decoder.decode
