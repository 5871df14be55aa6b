"""``dog data prepare``: the seven benchmark datasets of the paper as ImageFolder layouts with official splits.

    manifest = prepare_dataset("food101", "~/Downloads/food-101.tar.gz", "data/food101")
    # data/food101/train/<class>/*.jpg, data/food101/test/<class>/*.jpg, manifest.json, files.sha256

Everything is read from what the user downloaded (archive or extracted folder); nothing is fetched.
"""
from __future__ import annotations

import contextlib
import inspect
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from ...locks import folder_lock
from . import artbench10, caltech101, cub200, df20_mini, food101, stanford_cars, sun397
from .common import HASHES, MANIFEST, Plan, read_manifest, write_plan
from .sources import Source, inner_archives, open_source

DATASETS: dict[str, ModuleType] = {m.NAME: m for m in (food101, sun397, df20_mini, caltech101, cub200, artbench10,
                                                       stanford_cars)}


def dataset_module(name: str) -> ModuleType:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def check_splits(name: str, splits: list[str] | tuple[str, ...] | None) -> None:
    """Refuse a split that dataset ``name`` does not have (None: its default splits)."""
    if splits is None:
        return
    module = dataset_module(name)
    allowed = tuple(getattr(module, "SPLITS", None) or module.EXPECTED)  # the official splits
    bad = [s for s in splits if s not in allowed]
    if bad or not splits:
        raise ValueError(f"splits: {name} has no official {bad[0] if bad and bad[0] else repr('')} split; expected "
                         f"a comma separated list of {', '.join(allowed)}")


def make_plan(name: str, source: Source, **options: Any) -> Plan:
    """The plan of dataset ``name`` from ``source`` (options: ``splits`` and the dataset's own)."""
    module = dataset_module(name)
    check_splits(name, options.get("splits"))
    accepted = set(inspect.signature(module.plan).parameters) - {"source"}
    unknown = sorted(k for k, v in options.items() if v is not None and k not in accepted)
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; {name} takes {sorted(accepted)}")
    kwargs = {k: (tuple(v) if k == "splits" else v) for k, v in options.items() if v is not None}
    return module.plan(source, **kwargs)


def prepare_dataset(name: str, source: str | Path | list, out: str | Path, *, overwrite: bool = False,
                    workers: int = 4, progress: bool = False, remedy: str | None = None,
                    **options: Any) -> dict[str, Any]:
    """Lay dataset ``name`` out under ``out`` from the user's archive(s) or folder ``source``; returns the manifest.

    A rerun with the same dataset and options into a prepared ``out`` returns its manifest at once
    (``reused: True``); another source (other bytes) or dataset is refused, advising ``remedy`` when
    given (default: another --out or --overwrite). An archive inside the archive (Caltech101's zip) is opened when the
    dataset's files are not found at the top level.
    """
    check_splits(name, options.get("splits"))  # before any archive is read
    src = open_source(source)
    with contextlib.ExitStack() as stack:
        stack.enter_context(folder_lock(out))  # one writer per prepared folder, from the check to the manifest
        plan, used = _plan(name, src, Path(out).expanduser(), stack, options)
        return write_plan(plan, used, out, overwrite=overwrite, workers=workers, progress=progress, remedy=remedy)


def _plan(name: str, src: Source, out: Path, stack: contextlib.ExitStack,
          options: dict[str, Any]) -> tuple[Plan, Source]:
    """The plan from ``src``, else from the first archive inside it that holds the dataset."""
    try:
        return make_plan(name, src, **options), src
    except ValueError as first:
        inner = inner_archives(src)
        if not inner:
            raise
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".inner-", dir=out)))
        for member in inner:
            path = tmp / Path(member).name
            path.write_bytes(src.read(member))
            try:
                nested = open_source(path)
                plan = make_plan(name, nested, **options)
            except ValueError:
                continue
            nested.origin = f"{src.path}!{member}"
            return plan, nested
        raise first


__all__ = ["DATASETS", "HASHES", "MANIFEST", "Plan", "Source", "dataset_module", "make_plan", "open_source",
           "prepare_dataset", "read_manifest", "write_plan"]
