"""Whether a `dog sample` output is whole: what ``dog evaluate`` checks before scoring it.

A sample folder ``D`` is whole when ``D/settings.json`` says ``status: complete`` and the set being
scored holds exactly the seeds it records: ``D/samples.npz`` (its ``seeds``) or the PNGs of
``D/images`` (one ``{seed:06d}.png`` per seed). A run killed while writing PNGs, or killed while
extending the seed list (the old ``samples.npz`` beside a record of the new list), is not whole.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .shards import MERGED, RECORD

PNG_DIR = "images"


@dataclass
class SampleSet:
    """What is scored, the generation record of the `dog sample` folder it belongs to, and why it is not whole."""

    path: Path
    generation: dict[str, Any] | None = None
    incomplete: str | None = None  # None: whole (or not a `dog sample` output, which records nothing)


def _record(folder: Path) -> dict[str, Any]:
    path = folder / RECORD
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected the settings `dog sample` wrote") from None


def sample_set(path: str | Path) -> SampleSet:
    """The sample set at ``path`` (a `dog sample` folder, its ``samples.npz`` or ``images/``, or anything else)."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / MERGED).exists():
        path = path / MERGED
    elif path.is_dir() and (path / RECORD).is_file():
        rec = _record(path)  # a `dog sample` folder that never merged: killed before its last shard
        return SampleSet(path, rec, f"{path} holds no {MERGED} yet (status {rec.get('status')!r}): the run that "
                                    "writes it has not finished")
    folder = path.parent
    is_npz = path.name == MERGED and path.suffix == ".npz"
    is_pngs = path.is_dir() and path.name == PNG_DIR
    if not ((is_npz or is_pngs) and (folder / RECORD).is_file()):
        return SampleSet(path)
    rec = _record(folder)
    settings = rec.get("settings", {}) if isinstance(rec, dict) else {}
    seeds = [int(s) for s in settings.get("seeds", [])]
    if rec.get("status", "complete") != "complete":  # a record without status predates it: seeds decide
        why = f"its run is not finished ({RECORD} says status {rec.get('status')!r}, {len(seeds)} samples asked)"
    elif "seeds" not in settings:
        why = None  # nothing recorded to compare with
    elif is_npz:
        with np.load(path) as z:
            have = z["seeds"].tolist() if "seeds" in z.files else None
        why = None if have is None or have == seeds else (
            f"it holds {len(have)} samples, not the {len(seeds)} seeds {RECORD} records")
    else:
        have = sorted(p.name for p in path.glob("*.png"))
        want = sorted(f"{s:06d}.png" for s in seeds)
        why = None if have == want else f"it holds {len(have)} of the {len(want)} PNGs {RECORD} records"
    return SampleSet(path, rec, None if why is None else f"{path}: {why}")
