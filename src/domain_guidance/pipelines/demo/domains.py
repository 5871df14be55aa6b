"""The demo's targets: which source, target data, judge and exact domain measure each one uses.

``covered`` (the default) and ``outside`` are the glyph benchmark (``io/data/glyphs.py``): a DiT-M/2
source pre-trained on glyph shapes 0-7 in every hue, fine-tuned on 50 *blue* glyphs per class of four
shapes, as new labels 0-3. ``covered`` takes shapes 0-3, which the source already holds (about a sixth
of its images of each shape are blue): the target lies inside the source's domain, as in the paper.
``outside`` takes shapes 8-11, which the source never saw. The domain is measured exactly (the hue of
the shape's pixels: ``in_hue_band``), the shape by a 12-shape judge. ``animal`` is the earlier demo
(animal-mnist, four animals the source never saw, 1 channel), kept as a named variant. The choice of
the glyph design and of its fine-tune length is docs/regime-search.md's round 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...io.data.glyphs import BLUE_BAND, in_hue_band

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _blue_rate(images: np.ndarray) -> np.ndarray:
    """(N,) bool: is the glyph's shape in the blue band (uint8 (N, R, R, 3) images)."""
    return in_hue_band(images, BLUE_BAND)


@dataclass(frozen=True)
class DemoTarget:
    """Everything the demo does differently per target; the config's fields take their defaults from here."""

    name: str
    dataset: str  # the built-in the target images come from (fine-tune, reference, floors)
    classes: tuple[int, ...]  # original class ids of the target in ``dataset``
    judge_dataset: str  # the judge trains on this built-in's train split, all its classes
    judge_classes: int
    channels: int  # image channels of the whole benchmark
    judge_flip: bool  # random horizontal flips while training the judge (class-preserving in the data)
    source_asset: str  # shipped source checkpoint under assets/
    source_preset: str  # what pre-trains the source (--pretrain)
    pretrain_steps: int  # what the shipped source was trained for
    target_preset: str
    finetune_steps: int
    description: str  # one line for the report
    exact_domain: Callable[[np.ndarray], np.ndarray] | None = None  # (N,) bool in-domain, measured exactly

    @property
    def source(self) -> str:
        """The shipped source if present, else the run directory its preset trains into."""
        path = ASSETS / self.source_asset
        return str(path) if path.is_file() else f"runs/{self.source_preset}"


def _glyph(name: str, classes: tuple[int, ...], where: str) -> DemoTarget:
    return DemoTarget(
        name=name, dataset="glyphs-blue", classes=classes, judge_dataset="glyphs", judge_classes=12, channels=3,
        judge_flip=False, source_asset="glyph-source.safetensors", source_preset="glyph-source", pretrain_steps=10000,
        target_preset=f"glyph-target-{name}", finetune_steps=2000, exact_domain=_blue_rate,
        description=(f"glyphs, 16 px RGB: source = shapes 0-7 in every hue; target = blue shapes "
                     f"{classes[0]}-{classes[-1]} ({where}), new labels 0-{len(classes) - 1}"))


TARGETS: dict[str, DemoTarget] = {
    "covered": _glyph("covered", (0, 1, 2, 3), "inside the source's domain: the source holds these shapes in blue"),
    "outside": _glyph("outside", (8, 9, 10, 11), "shapes the source never saw"),
    "animal": DemoTarget(
        name="animal", dataset="animal-mnist", classes=(6, 7, 8, 9), judge_dataset="animal-mnist", judge_classes=10,
        channels=1, judge_flip=True, source_asset="animal-source.safetensors", source_preset="animal-source",
        pretrain_steps=9000, target_preset="animal-target", finetune_steps=1000,
        description="animal-mnist, 16 px gray: source = classes 0-5; target = classes 6-9 (animals the source "
                    "never saw)"),
}
DEFAULT_TARGET = "covered"


def get_target(name: str) -> DemoTarget:
    """The named target; a one-line error naming the choices otherwise."""
    if name not in TARGETS:
        raise ValueError(f"unknown demo target {name!r}; expected one of {sorted(TARGETS)}")
    return TARGETS[name]
