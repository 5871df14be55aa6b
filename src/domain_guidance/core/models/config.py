"""DiT configuration and the size registry (DiT / SiT naming: S, B, L, XL with patch 2, 4, 8)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# (depth, hidden_size, num_heads) per size; "T" and "M" are tiny sizes for tests and CPU demos.
SIZES: dict[str, tuple[int, int, int]] = {
    "XL": (28, 1152, 16),
    "L": (24, 1024, 16),
    "B": (12, 768, 12),
    "S": (12, 384, 6),
    "M": (6, 128, 4),
    "T": (2, 64, 4),
}


@dataclass
class DiTConfig:
    """Everything needed to build a DiT and to use it as a denoiser.

    The label table has ``num_classes + 1`` rows when ``null_class`` is true; the extra last row
    is the model's own null ("unconditional") label, ``null_label == num_classes``.
    """

    input_size: int | tuple[int, int] = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    null_class: bool = True
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    prediction: str = "eps"  # "eps" (DiT, ADM diffusion) or "velocity" (SiT, flow matching)
    latent: bool = True  # True: inputs are VAE latents; False: pixels in [-1, 1]
    vae: str | None = "stabilityai/sd-vae-ft-ema"  # VAE id or local path for latent models
    latent_scale: float = 0.18215
    w_embed: bool = False  # guidance weight w as an extra input (single-pass / DogFit); absent when off
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.input_size, list):
            self.input_size = tuple(self.input_size)
        h, w = self.grid_hw_pixels
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.class_dropout_prob > 0 and not self.null_class:
            raise ValueError("class_dropout_prob > 0 needs a null class row (null_class=True)")
        if self.prediction not in ("eps", "velocity"):
            raise ValueError(f"prediction must be 'eps' or 'velocity', got {self.prediction!r}")

    @property
    def grid_hw_pixels(self) -> tuple[int, int]:
        """Input (height, width) in model-input units (latent cells or pixels)."""
        s = self.input_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def null_label(self) -> int | None:
        """Index of this model's own null label, or None for a conditional-only model."""
        return self.num_classes if self.null_class else None

    @property
    def num_embeddings(self) -> int:
        return self.num_classes + int(self.null_class)

    def input_space(self) -> dict[str, Any]:
        """What two models must agree on to be used in one guided sampler."""
        return {
            "input_size": self.grid_hw_pixels,
            "in_channels": self.in_channels,
            "learn_sigma": self.learn_sigma,
            "prediction": self.prediction,
            "latent": self.latent,
            "latent_scale": self.latent_scale if self.latent else None,
        }

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not d["w_embed"]:  # off: the record (and every hash of it) of an ordinary model is unchanged
            del d["w_embed"]
        if isinstance(d["input_size"], tuple):
            d["input_size"] = list(d["input_size"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DiT config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "DiTConfig":
        return dataclasses.replace(self, **changes)


def dit_config(name: str, **overrides: Any) -> DiTConfig:
    """Config for a named size such as ``"DiT-XL/2"``, ``"XL/2"`` or ``"T/4"``.

    ``dit_config("DiT-XL/2")`` with no overrides is the official ImageNet-256 model
    (32x32x4 latents, 1000 classes + null, learned sigma).
    """
    key = name.removeprefix("DiT-").removeprefix("SiT-")
    try:
        size, patch = key.split("/")
        depth, hidden, heads = SIZES[size]
        patch_size = int(patch)
    except (ValueError, KeyError):
        raise ValueError(
            f"unknown model name {name!r}; expected '<size>/<patch>' with size in {sorted(SIZES)} "
            "and patch 2, 4 or 8, e.g. 'DiT-XL/2'"
        ) from None
    base = DiTConfig(
        input_size=overrides.pop("input_size", 32),
        patch_size=patch_size,
        depth=depth,
        hidden_size=hidden,
        num_heads=heads,
        prediction="velocity" if name.startswith("SiT-") else "eps",
    )
    return base.replace(**overrides) if overrides else base
