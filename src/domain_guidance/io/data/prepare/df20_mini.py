"""DF20-Mini (Danish Fungi 2020, Picek et al. 2022): images named in the metadata CSVs.

``DF20M-train_metadata_PROD.csv`` and ``DF20M-public_test_metadata_PROD.csv`` give, per image, its
file name (``image_path``), ``class_id`` and species (``species``, else ``scientificName``):
32,753 train / 3,640 test images of 182 species. Images are found by file name anywhere in the
source (the ``DF20M/`` folder of the full-size or the 300 px release).
"""
from __future__ import annotations

import csv
import io

from .common import Plan, folder_name
from .sources import Source

NAME = "df20-mini"
TITLE = "DF20-Mini"
EXPECTED = {"train": 32_753, "test": 3_640}
ARCHIVE = "DF20M images (DF20M.tar.gz or DF20M-300px) and DF20M-metadata (the train/test CSVs)"
IMAGE_COLUMNS = ("image_path", "filename", "ImageUniqueID")
NAME_COLUMNS = ("species", "scientificName")


def _csv_for(source: Source, split: str) -> str:
    key = "train" if split == "train" else "test"
    hits = [f for f in source.files if f.lower().endswith(".csv") and "df20m" in f.rsplit("/", 1)[-1].lower()
            and key in f.rsplit("/", 1)[-1].lower()]
    if not hits:
        raise ValueError(f"--from {source.path}: no DF20M *{key}* metadata CSV (e.g. DF20M-{key}_metadata_PROD.csv) "
                         f"inside; expected {ARCHIVE}")
    return min(hits, key=len)


def _column(header: list[str], options: tuple[str, ...], csv_name: str) -> str:
    for c in options:
        if c in header:
            return c
    raise ValueError(f"{csv_name}: none of the columns {list(options)}; found {header[:12]}")


def plan(source: Source, splits: tuple[str, ...] = ("train", "test")) -> Plan:
    by_name = {}
    for f in source.files:
        if not f.lower().endswith(".csv"):
            by_name.setdefault(f.rsplit("/", 1)[-1], f)
    items, missing, classes = [], [], {}
    for split in splits:
        name = _csv_for(source, split)
        rows = list(csv.DictReader(io.StringIO(source.read(name).decode("utf-8-sig", errors="replace"))))
        if not rows:
            raise ValueError(f"{name}: no rows")
        header = list(rows[0])
        img_col, name_col = _column(header, IMAGE_COLUMNS, name), _column(header, NAME_COLUMNS, name)
        for r in rows:
            species = r[name_col].strip()
            cid = int(r["class_id"]) if r.get("class_id", "").strip().lstrip("-").isdigit() else None
            classes.setdefault(species, cid)
            fname = r[img_col].strip().replace("\\", "/").rsplit("/", 1)[-1]
            if fname in by_name:
                items.append((split, folder_name(species), by_name[fname]))
            else:
                missing.append(fname)
    ordered = sorted(classes, key=lambda s: (classes[s] is None, classes[s] or 0, s))
    return Plan(NAME, items, [{"folder": folder_name(s), "name": s, "official_id": classes[s]} for s in ordered],
                {s: EXPECTED[s] for s in splits}, {"splits": list(splits)}, missing)
