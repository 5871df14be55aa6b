"""What every dataset module shares: the plan of a prepared dataset and the one writer of it.

A dataset module reads its official metadata from a ``Source`` and returns a ``Plan``: which source
file goes to which ``split/class`` folder, the class names, the official split sizes. ``write_plan``
turns it into an ImageFolder layout ``OUT/<split>/<class>/<file>``, decoding every image once:
unreadable files are skipped and listed (never a crash), each kept file is hashed. It writes into
``OUT/.partial`` and moves the splits into place at the end; ``manifest.json`` (counts, classes,
hashes, corrupt and missing files, differences from the official sizes) is written last, so a
folder with a manifest is complete and a rerun with the same options returns it untouched.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ...atomic import write_bytes, write_json
from ...fingerprints import check_stage_inputs
from ..image_folder import check_image
from .sources import Source

MANIFEST = "manifest.json"
HASHES = "files.sha256"
MANIFEST_FORMAT = 1
_UNSAFE = re.compile(r"[/\\\x00:*?\"<>|]")


@dataclass
class Plan:
    """A dataset laid out by its official metadata (nothing read or written yet)."""

    dataset: str
    items: list[tuple[str, str, str]]  # (split, class folder, source path)
    classes: list[dict[str, Any]]  # {"folder", "name", "official_id"} in official order
    expected: dict[str, int]  # the official number of images per split (what a complete download gives)
    options: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # listed by the metadata, absent from the source
    notes: list[str] = field(default_factory=list)


def folder_name(name: str) -> str:
    """A class name as a folder name: path separators and characters Windows refuses become ``_``."""
    clean = _UNSAFE.sub("_", str(name)).strip().strip(".")
    if not clean:
        raise ValueError(f"class name {name!r} gives an empty folder name")
    return clean


def locate(source: Source, marker: str, what: str) -> str:
    """The prefix (``''`` or ``'food-101/'``) under which ``marker`` lies in ``source``; the shortest wins."""
    hits = source.find(marker)
    if not hits:
        raise ValueError(f"--from {source.path}: no {marker!r} inside; expected {what}")
    best = min(hits, key=len)
    return best[: len(best) - len(marker.strip("/"))]


def read_lines(source: Source, name: str) -> list[str]:
    """Non-empty lines of a text file of the source (utf-8, BOM and CRLF tolerated)."""
    text = source.read(name).decode("utf-8-sig", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_and_hash(path: Path) -> tuple[str | None, str | None]:
    reason = check_image(path)
    return reason, None if reason else _sha256_file(path)


def _destinations(plan: Plan) -> dict[str, list[str]]:
    """source path -> destination paths ``split/class/file`` (a name taken twice in a folder gets a suffix)."""
    taken: set[str] = set()
    out: dict[str, list[str]] = {}
    for split, folder, src in plan.items:
        name = PurePosixPath(src).name
        dest, n = f"{split}/{folder}/{name}", 1
        while dest in taken:
            stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
            dest, n = f"{split}/{folder}/{stem}__{n}{suffix}", n + 1
        taken.add(dest)
        out.setdefault(src, []).append(dest)
    return out


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of a prepared folder, or None when there is none."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it (or pass --overwrite) to prepare again") from None


def _refuse_used(out: Path, plan: Plan, overwrite: bool, inputs: dict[str, str], source: Source,
                 remedy: str | None = None) -> dict[str, Any] | None:
    """The existing manifest when it matches this plan and source; refuse other contents unless ``overwrite``.

    ``remedy`` replaces the advice of each refusal (a caller without an ``--overwrite`` option).
    """
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("dataset") == plan.dataset and manifest.get("options") == plan.options:
        if overwrite and manifest.get("inputs") != inputs:
            return None
        check_stage_inputs(f"--out {out} (a prepared {plan.dataset!r})", manifest.get("inputs"), inputs,
                           f"its classes and images may not be those of --from {source.path}; " + (
                               remedy or "pass --overwrite to prepare it again from this source, or choose another "
                               "--out"))
        return manifest
    if overwrite:
        return None
    if manifest is not None:
        raise ValueError(f"--out {out} already holds a prepared {manifest.get('dataset')!r} with options "
                         f"{manifest.get('options')}, not {plan.dataset!r} with {plan.options}; "
                         + (remedy or "choose another --out or pass --overwrite"))
    used = [p.name for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if used:
        raise ValueError(f"--out {out} is not empty ({', '.join(sorted(used)[:5])}) and holds no {MANIFEST}; "
                         + (remedy or "choose an empty folder or pass --overwrite"))
    return None


def write_plan(plan: Plan, source: Source, out: str | Path, *, overwrite: bool = False, workers: int = 4,
               progress: bool = False, remedy: str | None = None) -> dict[str, Any]:
    """Lay ``plan`` out under ``out`` (see the module docstring); returns the manifest. ``remedy``: the
    advice of a refusal to use ``out`` (default: another --out or --overwrite)."""
    out = Path(out).expanduser()
    inputs = {"source": source.fingerprint()}  # the bytes of what was downloaded (io.fingerprints)
    done = _refuse_used(out, plan, overwrite, inputs, source, remedy)
    if done is not None:
        return {**done, "reused": True}
    t0 = time.perf_counter()
    staging = out / ".partial"
    if staging.exists():
        shutil.rmtree(staging)  # a run that was interrupted: its pieces are redone
    staging.mkdir(parents=True)
    dests = _destinations(plan)
    written: list[tuple[str, str]] = []  # (source, destination)
    seen: set[str] = set()
    corrupt: list[dict[str, str]] = []
    stream = source.stream(sorted(dests))
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, total=len(dests), desc=f"prepare {plan.dataset}", unit="img")
    for name, data in stream:
        if name not in dests:  # the source reported a fault in itself (a truncated archive)
            corrupt.append({"source": name, "reason": data.decode(errors="replace")})
            continue
        seen.add(name)
        if data.startswith(b"<unreadable archive member:"):  # a damaged zip member (see ZipSource.stream)
            corrupt.append({"source": name, "reason": data.decode(errors="replace").strip("<>")})
            continue
        for dest in dests[name]:
            target = staging / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written.append((name, dest))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        checked = list(pool.map(_check_and_hash, [staging / d for _, d in written]))
    hashes: dict[str, str] = {}
    for (src, dest), (reason, digest) in zip(written, checked):
        if reason is not None:
            corrupt.append({"source": src, "reason": reason})
            (staging / dest).unlink()
        else:
            hashes[dest] = digest
    missing = sorted(set(plan.missing) | (set(dests) - seen))
    manifest = {**_manifest(plan, source, hashes, corrupt, missing, time.perf_counter() - t0), "inputs": inputs}
    if not hashes:
        raise ValueError(f"--from {source.path}: none of the {len(dests)} images of {plan.dataset} could be "
                         f"read ({len(corrupt)} unreadable, {len(missing)} missing), e.g. "
                         f"{(corrupt[:1] or [{'source': missing[0] if missing else '?'}])[0]['source']}")
    for split in sorted({s for s, _, _ in plan.items}):
        if (out / split).exists():
            shutil.rmtree(out / split)
        if (staging / split).exists():
            (staging / split).rename(out / split)
    lines = "".join(f"{hashes[d]}  {d}\n" for d in sorted(hashes))
    write_bytes(out / HASHES, lines.encode())
    write_json(out / MANIFEST, manifest)
    shutil.rmtree(staging)
    return manifest


def _cross_split_duplicates(hashes: dict[str, str]) -> list[list[str]]:
    """Groups of written files (``split/class/file``) with the same bytes that lie in more than one split."""
    by_digest: dict[str, list[str]] = {}
    for dest in sorted(hashes):
        by_digest.setdefault(hashes[dest], []).append(dest)
    return [files for files in by_digest.values() if len({f.split("/")[0] for f in files}) > 1]


def _manifest(plan: Plan, source: Source, hashes: dict[str, str], corrupt: list[dict[str, str]],
              missing: list[str], seconds: float) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for dest in sorted(hashes):
        split, folder = dest.split("/")[:2]
        s = splits.setdefault(split, {"num_images": 0, "class_counts": {}, "lines": []})
        s["num_images"] += 1
        s["class_counts"][folder] = s["class_counts"].get(folder, 0) + 1
        s["lines"].append(f"{hashes[dest]}  {dest}\n")
    warnings = []
    for split, s in splits.items():
        s["num_classes"] = len(s["class_counts"])
        s["sha256"] = hashlib.sha256("".join(s.pop("lines")).encode()).hexdigest()  # of its files.sha256 lines
        want = plan.expected.get(split)
        s["expected_images"] = want
        if want is not None and want != s["num_images"]:
            warnings.append(f"{split}: {s['num_images']} images, the official split has {want}")
    for split in plan.expected:
        if split not in splits:
            warnings.append(f"{split}: no images (the official split has {plan.expected[split]})")
    if corrupt:
        warnings.append(f"{len(corrupt)} unreadable file(s) skipped, e.g. {corrupt[0]['source']} "
                        f"({corrupt[0]['reason']})")
    if missing:
        warnings.append(f"{len(missing)} file(s) named by the metadata are not in the source, e.g. {missing[0]}")
    overlap = _cross_split_duplicates(hashes)
    if overlap:
        warnings.append(f"{len(overlap)} image(s) are byte-identical in more than one split, e.g. "
                        f"{' = '.join(overlap[0])}: the splits overlap; check that the download is the official one")
    return {"format": MANIFEST_FORMAT, "dataset": plan.dataset, "options": plan.options,
            "source": source.describe(), "layout": "OUT/<split>/<class>/<file> (ImageFolder)",
            "splits": splits, "classes": plan.classes, "num_classes": len(plan.classes),
            "corrupt": corrupt, "missing": missing, "cross_split_duplicates": overlap, "warnings": warnings, "notes": plan.notes,
            "hashes_file": HASHES, "seconds": round(seconds, 2)}
