"""SUN397 (Xiao et al. 2010): ``SUN397/<letter>/<class>[/<sub>]/sun_*.jpg`` with the official partition files.

Default: partition 1 of the ten official ones (``Partitions/Training_01.txt`` / ``Testing_01.txt``,
50 + 50 images per class, 19,850 / 19,850), read from the image archive or from the separate
``Partitions.zip`` (``partitions=PATH``). ``split_lists={"train": FILE, "val": FILE, "test": FILE}``
takes other lists of the same form (``/a/abbey/sun_xxx.jpg`` per line), e.g. the 76,128 / 10,875 /
21,750 split of the follow-up work (TFDS's ``sun397/tfds`` lists). Class folders are the class path
without the letter, joined by ``_`` (``/a/apartment_building/outdoor`` -> ``apartment_building_outdoor``);
the manifest keeps the official names.
"""
from __future__ import annotations

from pathlib import Path

from .common import Plan, folder_name, read_lines
from .sources import Source, open_source

NAME = "sun397"
TITLE = "SUN397"
ARCHIVE = "SUN397.tar.gz (+ Partitions.zip, or pass partitions=PATH)"
PARTITION_EXPECTED = {"train": 19_850, "test": 19_850}
FOLLOW_UP_EXPECTED = {"train": 76_128, "val": 10_875, "test": 21_750}
SPLITS = ("train", "val", "test")  # val: in the follow-up work's split lists only


def _class_of(rel: str) -> str:
    """'/a/abbey/sun_x.jpg' -> '/a/abbey' (the official class path)."""
    parts = [p for p in rel.strip().split("/") if p]
    return "/" + "/".join(parts[:-1])


def _folder(cls: str) -> str:
    return folder_name("_".join([p for p in cls.split("/") if p][1:]))


def _lists(source: Source, partitions: str | None, partition: int,
           split_lists: dict[str, str] | None) -> tuple[dict[str, list[str]], dict[str, int]]:
    if split_lists:
        return ({s: [ln for ln in Path(f).expanduser().read_text().splitlines() if ln.strip()]
                 for s, f in split_lists.items()},
                {s: FOLLOW_UP_EXPECTED[s] for s in split_lists if s in FOLLOW_UP_EXPECTED})
    if not 1 <= partition <= 10:
        raise ValueError(f"sun397: partition must be 1..10 (the ten official partitions), got {partition}")
    names = {"train": f"Training_{partition:02d}.txt", "test": f"Testing_{partition:02d}.txt"}
    holder = open_source(partitions) if partitions else source
    found = {s: holder.find(n) for s, n in names.items()}
    if not all(found.values()):
        raise ValueError(f"sun397: no {names['train']} / {names['test']} in {holder.path}; pass the official "
                         "Partitions.zip (or its folder) as partitions=PATH (`dog data prepare sun397 --partitions "
                         "PATH`) or your own lists with --split-list train=FILE --split-list test=FILE")
    return ({s: read_lines(holder, min(found[s], key=len)) for s in names}, dict(PARTITION_EXPECTED))


def plan(source: Source, splits: tuple[str, ...] = ("train", "test"), partition: int = 1,
         partitions: str | None = None, split_lists: dict[str, str] | None = None) -> Plan:
    lists, expected = _lists(source, partitions, partition, split_lists)
    images = {}
    for f in source.files:
        parts = f.split("/")
        if "SUN397" in parts[:-1]:
            i = parts.index("SUN397")
            images["/" + "/".join(parts[i + 1:])] = f
    if not images:
        raise ValueError(f"--from {source.path}: no SUN397/<letter>/<class>/<image> inside; expected {ARCHIVE}")
    items, missing, classes = [], [], set()
    for split, lines in lists.items():
        if split not in splits and not split_lists:
            continue
        for line in lines:
            rel = "/" + line.strip().removeprefix("/").removeprefix("SUN397/")
            cls = _class_of(rel)
            classes.add(cls)
            if rel in images:
                items.append((split, _folder(cls), images[rel]))
            else:
                missing.append(rel)
    ordered = sorted(classes)
    options = {"splits": sorted(lists), "partition": None if split_lists else partition,
               "split_lists": {s: str(Path(f).expanduser().resolve()) for s, f in (split_lists or {}).items()}}
    return Plan(NAME, items, [{"folder": _folder(c), "name": c, "official_id": i} for i, c in enumerate(ordered)],
                {s: n for s, n in expected.items() if s in lists}, options, missing)
