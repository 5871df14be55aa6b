"""The procedural glyph domain: deterministic images, an exact hue (domain) measure, the built-in sets."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest

from domain_guidance.io.data import load_builtin
from domain_guidance.io.data.glyphs import (BLUE_BAND, GLYPH_CLASSES, glyph_attributes, glyph_hue, hsv_to_rgb,
                                            in_hue_band, make_glyphs, render_glyph)


def test_same_seed_same_images_and_each_image_depends_only_on_its_index():
    a, la = make_glyphs("glyphs", per_class=5)
    b, lb = make_glyphs("glyphs", per_class=5)
    assert a.dtype == np.uint8 and a.shape == (60, 16, 16, 3) and np.array_equal(a, b) and np.array_equal(la, lb)
    assert la.tolist() == [k for k in range(12) for _ in range(5)]
    # image i is drawn from (set seed, i) alone: the same index renders the same image by itself
    attrs = glyph_attributes(20261202, 7)
    assert np.array_equal(render_glyph(1, attrs), a[7])
    assert glyph_attributes(20261202, 7) == attrs and glyph_attributes(20261202, 8) != attrs
    blue, _ = make_glyphs("glyphs-blue", per_class=5)
    assert not np.array_equal(blue, a)  # another seed, another band


def test_hsv_to_rgb_matches_colorsys():
    for h, s, v in [(0.0, 1.0, 1.0), (0.3, 0.6, 0.8), (0.61, 0.9, 0.7), (0.99, 0.75, 0.95)]:
        np.testing.assert_allclose(hsv_to_rgb(h, s, v), colorsys.hsv_to_rgb(h, s, v), atol=1e-12)


def _hand_made(rgb: tuple[int, int, int], background: int = 30) -> np.ndarray:
    """A 16x16 image: grey background, a 6x6 block of colour ``rgb`` and antialiased half-cover edge pixels."""
    im = np.full((16, 16, 3), background, dtype=np.uint8)
    im[5:11, 5:11] = rgb
    edge = np.round(0.5 * np.array(rgb, dtype=float) + 0.5 * background).astype(np.uint8)  # half cover, same hue
    im[4, 5:11] = edge
    return im


@pytest.mark.parametrize("rgb", [(200, 40, 40), (40, 90, 220), (30, 200, 120), (220, 200, 20), (150, 30, 200)])
def test_glyph_hue_is_the_hsv_hue_of_the_shape_colour(rgb):
    expected = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]
    got = glyph_hue(_hand_made(rgb)[None])[0]
    assert abs((got - expected + 0.5) % 1 - 0.5) < 2e-3  # the edge pixels' rounding only


def test_in_hue_band_on_hand_made_images_and_an_empty_image():
    lo, hi = BLUE_BAND
    inside = [tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, 0.9, 0.9)) for h in (lo + 0.01, 0.63, hi - 0.01)]
    outside = [tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, 0.9, 0.9)) for h in (lo - 0.02, hi + 0.02, 0.1)]
    images = np.stack([_hand_made(c) for c in inside + outside] + [np.full((16, 16, 3), 40, np.uint8)])
    assert in_hue_band(images).tolist() == [True] * 3 + [False] * 3 + [False]
    assert np.isnan(glyph_hue(images[-1:]))[0]  # a grey image has no shape


def test_rendered_glyphs_measure_their_drawn_hue():
    images, _ = make_glyphs("glyphs", per_class=20)
    drawn = np.array([glyph_attributes(20261202, i)["hue"] for i in range(len(images))])
    err = np.abs((glyph_hue(images) - drawn + 0.5) % 1 - 0.5)
    assert err.max() < 5e-3
    blue, _ = make_glyphs("glyphs-blue", per_class=20)
    assert in_hue_band(blue).mean() > 0.98 and in_hue_band(images).mean() < 0.3


def test_builtin_glyph_sets_are_rgb_and_split_by_shape():
    ds = load_builtin("glyphs", classes=[0, 3], split="test", images_per_class=4)
    assert ds.images.shape == (8, 16, 16, 3) and ds.channels == 3 and ds.class_names == ["disk", "plus"]
    assert not ds.random_flip  # a mirrored crescent is not in the domain
    assert GLYPH_CLASSES[8] == "crescent" and len(GLYPH_CLASSES) == 12
    with pytest.raises(ValueError, match="RGB built-in"):
        load_builtin("glyphs", channels=1)
    gray = load_builtin("animal-mnist", classes=[0], images_per_class=2)
    assert gray.images.shape == (2, 28, 28)  # gray built-ins keep their default of one channel
