"""Content fingerprints of a stage's inputs, and the one check that a reused stage saw the same inputs.

A stage that is skipped or continued on a rerun (a prepared dataset, a resumed fine-tune, the stages of
``dog reproduce``) records the fingerprints of what it read. A rerun reuses it only when every
fingerprint still matches; otherwise ``check_stage_inputs`` raises ``StageInputsChanged`` naming each
input that changed (recorded vs now) and how to proceed.

- Data: ``fingerprint_path`` hashes the *bytes* of every file (BLAKE2b, 256-bit digest) together with
  its path relative to the folder. File names, sizes and modification times are never trusted: an
  image edited in place, a folder replaced by another with the same file names, an archive
  downloaded again under the same name all change it; a copied folder keeps it. Nothing is cached
  between processes: every run that checks a fingerprint reads the data once (BLAKE2b runs at about
  1 GB/s per core; files are hashed on ``workers`` threads), small next to the stage it guards.
- Weights: ``fingerprint_weights`` is the sha256 of the checkpoint file (or of a checkpoint folder's
  files), the same hash the checkpoints already record for their base (``checkpoint_sha256``).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping

from .checkpoint_files import checkpoint_sha256

CHUNK = 1 << 20
_MISSING = object()


class StageInputsChanged(ValueError):
    """A stage would be reused or resumed although one of its inputs changed since it was made."""


def fingerprint_file(path: str | os.PathLike) -> str:
    """BLAKE2b-256 hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under ``folder`` (recursive, symlinks followed, hidden entries skipped), by relative path."""
    root = Path(folder)
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def file_digests(paths: Iterable[str | os.PathLike], workers: int = 4) -> list[str]:
    """``fingerprint_file`` of each path, in order (hashed on ``workers`` threads)."""
    paths = list(paths)
    if len(paths) < 2 or workers <= 1:
        return [fingerprint_file(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL on large buffers
        return list(pool.map(fingerprint_file, paths))


def combine(named: Iterable[tuple[str, str]]) -> str:
    """One BLAKE2b-256 digest of ``(name, digest)`` pairs, in the given order."""
    h = hashlib.blake2b(digest_size=32)
    for name, digest in named:
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def fingerprint_path(path: str | os.PathLike, workers: int = 4) -> str:
    """Content fingerprint of a file (its bytes) or of a folder (relative paths and bytes of its files)."""
    p = Path(path).expanduser()
    if p.is_file():
        return fingerprint_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"cannot fingerprint {p}: no such file or folder")
    files = list_files(p)
    return combine(zip((f.relative_to(p).as_posix() for f in files), file_digests(files, workers)))


def fingerprint_weights(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file, or of a checkpoint folder (names and contents of its files)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"cannot fingerprint weights {p}: no such file or folder")
    return checkpoint_sha256(p)


def _show(value: Any) -> str:
    if value is _MISSING:
        return "not recorded"
    if isinstance(value, str) and len(value) > 16:
        return value[:16] + "..."
    return repr(value)


def input_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"name: recorded A, now B"`` for every input whose fingerprint differs (a missing one counts)."""
    return [f"{k}: recorded {_show(recorded.get(k, _MISSING))}, now {_show(current.get(k, _MISSING))}"
            for k in sorted(set(recorded) | set(current)) if recorded.get(k, _MISSING) != current.get(k, _MISSING)]


def check_stage_inputs(stage: str, recorded: Mapping[str, Any] | None, current: Mapping[str, Any],
                       remedy: str) -> None:
    """Raise ``StageInputsChanged`` unless ``recorded`` (what ``stage`` was made from) equals ``current``.

    ``recorded`` None means the stage holds no record (made by an older version): refused too, since
    nothing says it saw these inputs. ``remedy`` says how to proceed (another output folder, a flag).
    """
    if recorded is None:
        raise StageInputsChanged(f"{stage} holds no record of the inputs it was made from (made by an older "
                                 f"version), so it cannot be checked against the current ones; {remedy}")
    diffs = input_differences(recorded, current)
    if diffs:
        raise StageInputsChanged(f"{stage} was made from other inputs than the current ones ("
                                 + "; ".join(diffs) + f"); {remedy}")
