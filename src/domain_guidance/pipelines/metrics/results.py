"""Evaluation results keyed by everything that decides them, stored so that different keys never collide.

A result's key is the sha256 of: the samples' content (``image_set_sha256``), each reference's
content, each extractor's protocol (network weights, resize, preprocessing, precision) and the
metric settings (metrics, PRDC k, KID subsets, seed, Frechet method). Batch size and device are
left out: they change no score beyond float rounding.

A result file holds the latest result at its top level (what ``dog evaluate`` printed) and every
result ever written to it under ``records``, by key: scoring the same file against another
reference, at another precision or with other settings adds a record and never replaces one.
Writes take the folder's lock (:mod:`domain_guidance.io.locks`) and are atomic.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ...io.atomic import write_json
from ...io.locks import folder_lock
from .stats import extractor_fields

FORMAT_TAG = "domain_guidance/metrics"
KEY_SETTINGS = ("metrics", "prdc_k", "kid_subsets", "kid_subset_size", "seed", "fd_method")


def result_key(result: dict[str, Any]) -> str:
    """sha256 of what decides ``result``'s numbers (see the module doc)."""
    decided = {
        "samples": result["samples"]["image_set_sha256"],
        "reference": {k: (r.get("image_set_sha256"), r.get("num_images")) for k, r in result["reference"].items()},
        "protocol": {k: extractor_fields(p) for k, p in result["protocol"].items()},
        "settings": {k: result["settings"].get(k) for k in KEY_SETTINGS},
    }
    return hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()


def _earlier_records(path: Path) -> dict[str, Any]:
    """The records already in ``path`` (an unkeyed result of an earlier version kept as ``unkeyed``)."""
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected a result file of dog evaluate: move it away") from None
    if not isinstance(old, dict) or "metrics" not in old:
        raise ValueError(f"{path} is not a result file of dog evaluate (no 'metrics'); refusing to replace it: "
                         "choose another --out")
    records = dict(old.get("records") or {})
    if not records:
        records[old.get("key") or "unkeyed"] = {k: v for k, v in old.items() if k != "records"}
    return records


def write_result(path: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """Add ``result`` (with its ``key``) to the result file ``path``; returns what was written."""
    path = Path(path)
    result = {k: v for k, v in result.items() if k != "records"}
    result.setdefault("format", FORMAT_TAG)
    result["key"] = result_key(result)
    with folder_lock(path.parent):
        records = _earlier_records(path)
        records[result["key"]] = result
        written = {**result, "records": records}
        write_json(path, written)
    return written
