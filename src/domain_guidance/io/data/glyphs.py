"""``glyphs``: a procedurally generated image domain with known attributes (class = shape, domain = hue).

Each image is one coloured shape on a dark grey background, drawn analytically with 4 x 4
supersampling (antialiased edges) from attributes that a seeded generator draws per image:

- class: one of ``GLYPH_SHAPES`` (12 shapes, rotation limited to +-12 degrees so that no shape turns
  into another: a square stays at least 21 degrees from a diamond, a plus from an x);
- colour: hue uniform in [0, 1) for ``glyphs``, in ``BLUE_BAND`` for ``glyphs-blue``; saturation
  U[0.6, 1], value U[0.7, 1];
- size U[0.5, 0.8] of the half-width, centre offset U[-0.15, 0.15] per axis, background grey U[0, 0.25].

The data is unlimited and exactly reproducible: image ``i`` of a set depends only on ``(set seed, i)``.
Because the background is grey and antialiasing blends the shape's colour with grey, every pixel
of the shape keeps the shape's hue, so the *domain* of an image (is its shape's hue inside a band?)
can be measured exactly from its pixels (``glyph_hue``, ``in_hue_band``) instead of by a learned judge.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# (name, inside test on rotated, scaled coordinates (u, v) in [-1, 1]^2; v points up)
_SQ3 = np.sqrt(3.0)
GLYPH_SHAPES: list[tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = [
    ("disk", lambda u, v: u * u + v * v <= 1.0),
    ("square", lambda u, v: np.maximum(abs(u), abs(v)) <= 0.8),
    ("triangle", lambda u, v: (v >= -0.6) & (v <= 1.0 - _SQ3 * abs(u))),
    ("plus", lambda u, v: ((abs(u) <= 0.3) & (abs(v) <= 0.95)) | ((abs(v) <= 0.3) & (abs(u) <= 0.95))),
    ("ring", lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.5 ** 2)),
    ("diamond", lambda u, v: abs(u) + abs(v) <= 1.0),
    ("x", lambda u, v: (abs(u - v) <= 0.42) & (abs(u + v) <= 1.35) | (abs(u + v) <= 0.42) & (abs(u - v) <= 1.35)),
    ("half-disk", lambda u, v: (u * u + v * v <= 1.0) & (v <= 0.2)),
    ("crescent", lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.75 ** 2)),
    ("hourglass", lambda u, v: (abs(u) <= abs(v)) & (abs(v) <= 0.9)),
    ("tee", lambda u, v: ((v >= 0.45) & (v <= 0.95) & (abs(u) <= 0.9))
     | ((abs(u) <= 0.28) & (v >= -0.95) & (v <= 0.5))),
    ("frame", lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.85) & (np.maximum(abs(u), abs(v)) >= 0.5)),
]
GLYPH_CLASSES = [name for name, _ in GLYPH_SHAPES]
BLUE_BAND = (0.55, 0.72)  # the hue band of `glyphs-blue` (a sixth of the hue circle: blues)
_SEEDS = {"glyphs": 20261202, "glyphs-blue": 20261203}
PER_CLASS = 2000  # images per class of each built-in glyph set


def glyph_attributes(seed: int, index: int, *, hue_band: tuple[float, float] | None = None) -> dict[str, float]:
    """The attributes of image ``index`` of the set with ``seed`` (one generator per image)."""
    rng = np.random.default_rng([seed, index])
    lo, hi = hue_band or (0.0, 1.0)
    hue = float(rng.uniform(lo, hi)) % 1.0
    return dict(hue=hue, saturation=float(rng.uniform(0.6, 1.0)), value=float(rng.uniform(0.7, 1.0)),
                size=float(rng.uniform(0.5, 0.8)), dx=float(rng.uniform(-0.15, 0.15)),
                dy=float(rng.uniform(-0.15, 0.15)), angle=float(rng.uniform(-np.pi / 15, np.pi / 15)),
                background=float(rng.uniform(0.0, 0.25)))


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) -> RGB (3,) float in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def render_glyph(shape: int, attrs: dict[str, float], resolution: int = 16, supersample: int = 4) -> np.ndarray:
    """Draw one glyph: uint8 (resolution, resolution, 3)."""
    n = resolution * supersample
    c = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # pixel centres in [-1, 1]
    x, y = np.meshgrid(c, -c)  # (n, n); y points up
    x, y = (x - attrs["dx"]) / attrs["size"], (y - attrs["dy"]) / attrs["size"]
    ca, sa = np.cos(attrs["angle"]), np.sin(attrs["angle"])
    u, v = ca * x + sa * y, -sa * x + ca * y
    inside = GLYPH_SHAPES[shape][1](u, v).astype(np.float64)  # (n, n)
    cover = inside.reshape(resolution, supersample, resolution, supersample).mean(axis=(1, 3))  # (R, R)
    fg = hsv_to_rgb(attrs["hue"], attrs["saturation"], attrs["value"])  # (3,)
    img = cover[..., None] * fg + (1.0 - cover[..., None]) * attrs["background"]  # (R, R, 3)
    return np.round(img * 255.0).clip(0, 255).astype(np.uint8)


def make_glyphs(name: str, per_class: int = PER_CLASS, resolution: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (12 * per_class, R, R, 3), labels int64) of a built-in glyph set, class-major."""
    if name not in _SEEDS:
        raise KeyError(f"unknown glyph set {name!r}; expected one of {sorted(_SEEDS)}")
    band = BLUE_BAND if name == "glyphs-blue" else None
    images, labels = [], []
    for shape in range(len(GLYPH_SHAPES)):
        for j in range(per_class):
            index = shape * per_class + j
            images.append(render_glyph(shape, glyph_attributes(_SEEDS[name], index, hue_band=band), resolution))
            labels.append(shape)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def glyph_hue(images: np.ndarray, min_saturation: float = 0.25, min_pixels: int = 2) -> np.ndarray:
    """Hue in [0, 1) of each image's shape, NaN where no shape is found: float (N,).

    Pixels with saturation ``(max - min) / max`` of at least ``min_saturation`` are the shape's (the
    background is grey, saturation 0); their hue is averaged on the circle, weighted by chroma
    ``max - min``. Blending a colour with grey keeps its hue, so edge pixels measure the same hue.
    """
    rgb = np.asarray(images, dtype=np.float64).reshape(len(images), -1, 3) / 255.0  # (N, P, 3)
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = mx - mn  # (N, P)
    sat = np.where(mx > 0, chroma / np.maximum(mx, 1e-12), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    c = np.maximum(chroma, 1e-12)
    sextant = np.where(mx == r, ((g - b) / c) % 6.0, np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    angle = sextant / 6.0 * 2 * np.pi  # the HSV hue of each pixel (colorsys' formula), as an angle
    weight = np.where(sat >= min_saturation, chroma, 0.0)
    cx, cy = (weight * np.cos(angle)).sum(-1), (weight * np.sin(angle)).sum(-1)
    hue = (np.arctan2(cy, cx) / (2 * np.pi)) % 1.0
    found = (sat >= min_saturation).sum(-1) >= min_pixels
    return np.where(found, hue, np.nan)


def in_hue_band(images: np.ndarray, band: tuple[float, float] = BLUE_BAND) -> np.ndarray:
    """bool (N,): the image's shape has a hue inside ``band`` (an image without a shape is not)."""
    hue = glyph_hue(images)  # NaN where no shape: every comparison with NaN is False
    return (hue >= band[0]) & (hue < band[1])
