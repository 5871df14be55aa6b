"""Stanford Cars (Krause et al. 2013): ``cars_train/`` and ``cars_test/`` with the devkit's annotations.

``devkit/cars_meta.mat`` (``class_names``, 196), ``devkit/cars_train_annos.mat`` and
``cars_test_annos_withlabels.mat`` (struct arrays with ``fname`` and the 1-based ``class``), read
with ``scipy.io.loadmat``: 8,144 train / 8,041 test images. Class folders are ``NNN.Name`` (official
id, 1-based, so that sorted folders keep the official order; ``/`` in a name becomes ``_``).
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from .common import Plan, folder_name, locate
from .sources import Source

NAME = "stanford-cars"
TITLE = "Stanford Cars"
EXPECTED = {"train": 8_144, "test": 8_041}
ARCHIVE = "cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat (in one folder or zip)"
ANNOTATIONS = {"train": "cars_train_annos.mat", "test": "cars_test_annos_withlabels.mat"}


def _loadmat(source: Source, name: str) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(io.BytesIO(source.read(name)), squeeze_me=True, struct_as_record=False)
    except (ValueError, TypeError, OSError) as e:
        raise ValueError(f"{source.path}: {name} is not a readable MATLAB .mat file ({e})") from None


def _one(source: Source, filename: str) -> str:
    hits = source.find(filename)
    if not hits:
        raise ValueError(f"--from {source.path}: no {filename} inside; expected {ARCHIVE}")
    return min(hits, key=len)


def plan(source: Source, splits: tuple[str, ...] = ("train", "test")) -> Plan:
    locate(source, "cars_meta.mat", f"the devkit (devkit/cars_meta.mat) among {ARCHIVE}")
    meta = _loadmat(source, _one(source, "cars_meta.mat"))
    if "class_names" not in meta:
        raise ValueError(f"{source.path}: cars_meta.mat has no 'class_names' (keys {sorted(meta)})")
    names = [str(n) for n in np.atleast_1d(meta["class_names"])]
    folders = [folder_name(f"{i + 1:03d}.{n}") for i, n in enumerate(names)]
    items = []
    for split in splits:
        annos = _loadmat(source, _one(source, ANNOTATIONS[split])).get("annotations")
        if annos is None:
            raise ValueError(f"{source.path}: {ANNOTATIONS[split]} has no 'annotations' struct array")
        by_name = {f.rsplit("/", 1)[-1]: f for f in source.files if f.split("/")[-2:-1] == [f"cars_{split}"]}
        for a in np.atleast_1d(annos):
            fname, label = str(a.fname), int(getattr(a, "class"))
            if not 1 <= label <= len(names):
                raise ValueError(f"{ANNOTATIONS[split]}: {fname} has class {label}, expected 1..{len(names)}")
            items.append((split, folders[label - 1], by_name.get(fname, f"cars_{split}/{fname}")))
    return Plan(NAME, items, [{"folder": f, "name": n, "official_id": i + 1}
                              for i, (f, n) in enumerate(zip(folders, names))],
                {s: EXPECTED[s] for s in splits}, {"splits": list(splits)})
