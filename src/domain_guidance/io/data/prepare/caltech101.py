"""Caltech-101 (Fei-Fei et al. 2004): ``101_ObjectCategories/<class>/image_NNNN.jpg``.

There is no official split: every image of the 101 object classes goes to ``train`` (8,677
images), the clutter class ``BACKGROUND_Google`` is left out. The official zip holds the images
as an inner ``101_ObjectCategories.tar.gz``, which is read where it lies.
"""
from __future__ import annotations

from .common import Plan, folder_name
from .sources import Source

NAME = "caltech101"
TITLE = "Caltech-101"
EXPECTED = {"train": 8_677}
ARCHIVE = "caltech-101.zip or 101_ObjectCategories.tar.gz"
EXCLUDED = ("BACKGROUND_Google",)
MARKER = "101_ObjectCategories"


def plan(source: Source, splits: tuple[str, ...] = ("train",)) -> Plan:
    if tuple(splits) != ("train",):
        raise ValueError(f"caltech101 has no official test split; --splits must be train, got {list(splits)}")
    items, top = [], None
    for f in source.files:
        parts = f.split("/")
        if MARKER in parts[:-2]:
            i = parts.index(MARKER)
            if len(parts) == i + 3:
                top = top or "/".join(parts[:i + 1])
                if parts[i + 1] not in EXCLUDED and f.startswith(top + "/"):
                    items.append(("train", folder_name(parts[i + 1]), f))
    if not items:
        raise ValueError(f"--from {source.path}: no {MARKER}/<class>/<image> inside; expected {ARCHIVE}")
    names = sorted({c for _, c, _ in items}, key=str.lower)
    return Plan(NAME, items, [{"folder": c, "name": c, "official_id": i} for i, c in enumerate(names)],
                dict(EXPECTED), {"splits": ["train"], "excluded_classes": list(EXCLUDED)},
                notes=["no official split: all 8,677 object images form the training (and reference) set"])
