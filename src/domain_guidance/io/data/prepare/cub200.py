"""CUB-200-2011 (Wah et al. 2011): ``CUB_200_2011/images/<NNN.Class>/<file>.jpg`` with the official
``images.txt`` (id path), ``train_test_split.txt`` (id 1=train 0=test), ``image_class_labels.txt``
and ``classes.txt`` (id NNN.Class): 5,994 train / 5,794 test images, 200 classes. Class folders
keep the official ``NNN.Name`` (their sorted order is the official order).
"""
from __future__ import annotations

from .common import Plan, folder_name, locate, read_lines
from .sources import Source

NAME = "cub200"
TITLE = "CUB-200-2011"
EXPECTED = {"train": 5_994, "test": 5_794}
ARCHIVE = "CUB_200_2011.tgz (Caltech's release)"


def _table(source: Source, name: str) -> dict[str, str]:
    out = {}
    for line in read_lines(source, name):
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


def plan(source: Source, splits: tuple[str, ...] = ("train", "test")) -> Plan:
    top = locate(source, "train_test_split.txt", f"the CUB layout CUB_200_2011/images.txt, train_test_split.txt, "
                                                 f"classes.txt and images/ from {ARCHIVE}")
    images = _table(source, top + "images.txt")
    is_train = _table(source, top + "train_test_split.txt")
    classes = _table(source, top + "classes.txt")
    labels = _table(source, top + "image_class_labels.txt") if f"{top}image_class_labels.txt" in source.files else {}
    items = []
    for image_id, rel in images.items():
        flag = is_train.get(image_id)
        if flag not in ("0", "1"):
            raise ValueError(f"{source.path}: train_test_split.txt has no 0/1 entry for image id {image_id} ({rel})")
        split = "train" if flag == "1" else "test"
        if split not in splits:
            continue
        cls = classes[labels[image_id]] if image_id in labels else rel.split("/")[0]
        items.append((split, folder_name(cls), f"{top}images/{rel}"))
    ordered = sorted(classes.items(), key=lambda kv: int(kv[0]))
    return Plan(NAME, items, [{"folder": folder_name(c), "name": c, "official_id": int(i) - 1} for i, c in ordered],
                {s: EXPECTED[s] for s in splits}, {"splits": list(splits)})
