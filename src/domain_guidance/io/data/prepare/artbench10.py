"""ArtBench-10 (Liao et al. 2022), the ImageFolder release ``artbench-10-imagefolder-split/{train,test}/<style>/*.jpg``:
10 styles, 5,000 train and 1,000 test images each (50,000 / 10,000), 256 x 256.
"""
from __future__ import annotations

from .common import Plan, folder_name
from .sources import Source

NAME = "artbench10"
TITLE = "ArtBench-10"
EXPECTED = {"train": 50_000, "test": 10_000}
ARCHIVE = "artbench-10-imagefolder-split.tar (the ImageFolder release with train/ and test/)"
STYLES = ("art_nouveau", "baroque", "expressionism", "impressionism", "post_impressionism", "realism",
          "renaissance", "romanticism", "surrealism", "ukiyo_e")


def plan(source: Source, splits: tuple[str, ...] = ("train", "test")) -> Plan:
    items = []
    for f in source.files:
        parts = f.split("/")
        if len(parts) >= 3 and parts[-3] in splits and parts[-2] in STYLES:
            items.append((parts[-3], folder_name(parts[-2]), f))
    if not items:
        raise ValueError(f"--from {source.path}: no <split>/<style>/<image> with split in {list(splits)} and a "
                         f"style of {list(STYLES)}; expected {ARCHIVE}")
    return Plan(NAME, items, [{"folder": s, "name": s, "official_id": i} for i, s in enumerate(STYLES)],
                {s: EXPECTED[s] for s in splits}, {"splits": list(splits)})
