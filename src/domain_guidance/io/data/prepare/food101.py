"""Food-101 (Bossard et al. 2014): ``food-101/images/<class>/<id>.jpg`` split by ``meta/train.txt`` / ``meta/test.txt``.

Each split file lists ``<class>/<id>`` without the extension (750 train and 250 test images per
class: 75,750 / 25,250); ``meta/classes.txt`` gives the 101 class names in official order.
``train_set="all"`` writes every image (train + test, 101,000) to ``train/`` and no test split: what
the follow-up work (DogFit) trained and evaluated on (docs/protocols.md).
"""
from __future__ import annotations

from .common import Plan, folder_name, locate, read_lines
from .sources import Source

NAME = "food101"
TITLE = "Food-101"
EXPECTED = {"train": 75_750, "test": 25_250}
TRAIN_SETS = ("official", "all")  # all: train.txt + test.txt into train/ (101,000 images)
ARCHIVE = "food-101.tar.gz (the ETH Zurich release; the Kaggle zip with the same layout works too)"


def plan(source: Source, splits: tuple[str, ...] = ("train", "test"), train_set: str = "official") -> Plan:
    if train_set not in TRAIN_SETS:
        raise ValueError(f"food101: train_set {train_set!r}; expected one of {list(TRAIN_SETS)} (all: the 101,000 "
                         "images of train.txt and test.txt in train/, as the follow-up work)")
    if train_set == "all" and tuple(splits) != ("train", "test") and tuple(splits) != ("train",):
        raise ValueError(f"food101: train_set 'all' writes one split, train (every image); got splits {list(splits)}")
    top = locate(source, "meta/train.txt", f"the Food-101 layout food-101/meta/train.txt and food-101/images/ "
                                           f"from {ARCHIVE}")
    classes = read_lines(source, top + "meta/classes.txt") if f"{top}meta/classes.txt" in source.files else None
    by_stem = {f[len(top) + len("images/"):].rsplit(".", 1)[0]: f
               for f in source.files if f.startswith(top + "images/")}
    items, missing = [], []
    lists = ({"train": ("train", "test")} if train_set == "all" else {s: (s,) for s in splits})  # out split -> lists
    for split, names_of in lists.items():
        for line in (ln for name in names_of for ln in read_lines(source, f"{top}meta/{name}.txt")):
            cls = line.split("/")[0]
            src = by_stem.get(line)
            if src is None:
                missing.append(f"{top}images/{line}.jpg")
                continue
            items.append((split, folder_name(cls), src))
    names = classes or sorted({c for _, c, _ in items})
    expected = {s: sum(EXPECTED[n] for n in names_of) for s, names_of in lists.items()}
    # the default's options stay {"splits": ...}: folders prepared before the option was added are reused
    options = {"splits": list(lists), **({"train_set": train_set} if train_set != "official" else {})}
    return Plan(NAME, items, [{"folder": folder_name(c), "name": c, "official_id": i} for i, c in enumerate(names)],
                expected, options, missing)
