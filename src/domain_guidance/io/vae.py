"""A thin wrapper around ``diffusers.AutoencoderKL``: images in [-1, 1] <-> latents, batch-wise, no grad.

Convention (DiT's): ``encode`` returns the posterior ``(mean, std)`` UNSCALED; model-space latents
are ``(mean + std * noise) * scale``; ``decode`` takes model-space (scaled) latents.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

DEFAULT_VAE = "stabilityai/sd-vae-ft-ema"
DEFAULT_SCALE = 0.18215


def _looks_local(path_or_id: str) -> bool:
    """True when the string can only be a filesystem path (not an ``owner/name`` hub id)."""
    p = os.path.expanduser(path_or_id)
    return os.path.exists(p) or p.startswith((".", "/", "\\")) or p.count("/") > 1 or os.sep != "/" and os.sep in p


class VAE:
    """``AutoencoderKL`` with DiT conventions. Outputs are float32 on the device of the input."""

    def __init__(self, model: Any, scale: float = DEFAULT_SCALE, source: str = "<in-memory>",
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self.model = model.eval().requires_grad_(False)
        if device is not None or dtype is not None:
            self.model.to(device=device, dtype=dtype)
        self.scale, self.source = float(scale), source
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike = DEFAULT_VAE, *, subfolder: str | None = None,
                        scale: float = DEFAULT_SCALE, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, local_files_only: bool = False) -> "VAE":
        """Load from a local directory (config.json + weights) or a hub id (needs network or the hub cache)."""
        from diffusers import AutoencoderKL

        src = str(path_or_id)
        if _looks_local(src):
            folder = Path(src).expanduser() / (subfolder or "")
            if not folder.is_dir():
                raise FileNotFoundError(f"VAE directory {folder} does not exist (expected a folder with config.json "
                                        "and diffusion_pytorch_model.safetensors)")
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"VAE directory {folder} has no config.json: not a diffusers AutoencoderKL "
                                        "folder (save one with AutoencoderKL.save_pretrained)")
            model = AutoencoderKL.from_pretrained(str(folder), torch_dtype=dtype)
        else:
            try:
                model = AutoencoderKL.from_pretrained(src, subfolder=subfolder, torch_dtype=dtype,
                                                      local_files_only=local_files_only)
            except (OSError, ValueError) as e:  # diffusers wraps connection errors in OSError
                raise OSError(f"could not load VAE {src!r}{f' (subfolder {subfolder!r})' if subfolder else ''} from "
                              "the Hugging Face hub or its local cache: the hub is unreachable when offline. Pass a "
                              f"local directory holding the VAE (config.json + weights) instead. Cause: {e}") from e
        return cls(model, scale=scale, source=src + (f"/{subfolder}" if subfolder else ""), device=device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def in_channels(self) -> int:
        return int(self.model.config.in_channels)

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def downsample(self) -> int:
        """Pixels per latent cell along each side (8 for the SD VAEs)."""
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights (names, dtypes, shapes, bytes); computed once."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, t in sorted(self.model.state_dict().items()):
                t = t.detach().cpu().contiguous()
                h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VAE {self.source} expects images (N, {self.in_channels}, H, W); got {tuple(x.shape)}")
        if x.shape[2] % self.downsample or x.shape[3] % self.downsample:
            raise ValueError(f"VAE {self.source}: image size {tuple(x.shape[2:])} must be divisible by {self.downsample}")

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) in [-1, 1] -> UNSCALED posterior ``(mean, std)``, each (N, c, H/f, W/f)."""
        self._check_images(x)
        means, stds = [], []
        for chunk in x.split(batch_size):
            dist = self.model.encode(chunk.to(self.device, self.dtype)).latent_dist
            means.append(dist.mean.float().to(x.device))
            stds.append(dist.std.float().to(x.device))
        return torch.cat(means), torch.cat(stds)

    @torch.no_grad()
    def encode_sample(self, x: torch.Tensor, generator: torch.Generator | None = None,
                      batch_size: int = 32) -> torch.Tensor:
        """Images in [-1, 1] -> SCALED latents ``(mean + std * noise) * scale``; noise from ``generator``."""
        mean, std = self.encode(x, batch_size)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        return (mean + std * noise) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """SCALED latents (N, c, h, w) -> images (N, C, h*f, w*f) float32 in [-1, 1] (clamped)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"VAE {self.source} expects latents (N, {self.latent_channels}, h, w); "
                             f"got {tuple(latents.shape)}")
        out = [self.model.decode(z.to(self.device, self.dtype) / self.scale).sample.float().to(latents.device)
               for z in latents.split(batch_size)]
        return torch.cat(out).clamp_(-1.0, 1.0)
