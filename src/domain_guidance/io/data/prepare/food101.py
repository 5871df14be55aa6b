"""Food-101 (Bossard et al. 2014): ``food-101/images/<class>/<id>.jpg`` split by ``meta/train.txt`` / ``meta/test.txt``.

Each split file lists ``<class>/<id>`` without the extension (750 train and 250 test images per
class: 75,750 / 25,250); ``meta/classes.txt`` gives the 101 class names in official order.
"""
from __future__ import annotations

from .common import Plan, folder_name, locate, read_lines
from .sources import Source

NAME = "food101"
TITLE = "Food-101"
EXPECTED = {"train": 75_750, "test": 25_250}
ARCHIVE = "food-101.tar.gz (the ETH Zurich release; the Kaggle zip with the same layout works too)"


def plan(source: Source, splits: tuple[str, ...] = ("train", "test")) -> Plan:
    top = locate(source, "meta/train.txt", f"the Food-101 layout food-101/meta/train.txt and food-101/images/ "
                                           f"from {ARCHIVE}")
    classes = read_lines(source, top + "meta/classes.txt") if f"{top}meta/classes.txt" in source.files else None
    by_stem = {f[len(top) + len("images/"):].rsplit(".", 1)[0]: f
               for f in source.files if f.startswith(top + "images/")}
    items, missing = [], []
    for split in splits:
        for line in read_lines(source, f"{top}meta/{split}.txt"):
            cls = line.split("/")[0]
            src = by_stem.get(line)
            if src is None:
                missing.append(f"{top}images/{line}.jpg")
                continue
            items.append((split, folder_name(cls), src))
    names = classes or sorted({c for _, c, _ in items})
    return Plan(NAME, items, [{"folder": folder_name(c), "name": c, "official_id": i} for i, c in enumerate(names)],
                {s: EXPECTED[s] for s in splits}, {"splits": list(splits)}, missing)
