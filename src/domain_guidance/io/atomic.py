"""Atomic writes: a half-written file never replaces a good one (temp file, fsync, rename).

The one place for fsync and JSON writing: checkpoint directories (``checkpoint_files.atomic_dir``)
and training checkpoints use these helpers too. Every JSON we write is strict JSON: a NaN or
infinity is refused with the key path that holds it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (errors raise) or a directory (best effort: not every filesystem allows it) to disk."""
    path = Path(path)
    is_dir = path.is_dir()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if is_dir:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not is_dir:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it, and on success it replaces ``path``.

    The temp name keeps ``suffix`` (e.g. ".npz") for writers that insist on an extension.
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=(suffix or path.suffix) + ".tmp")
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _nonfinite_paths(data: Any, where: str = "") -> Iterator[str]:
    """Key paths (``a.b[2]``) of every NaN / infinite float in nested dicts, lists and tuples."""
    if isinstance(data, float) and not math.isfinite(data):
        yield where or "<top level>"
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _nonfinite_paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            yield from _nonfinite_paths(v, f"{where}[{i}]")


def dumps_json(data: Any, context: str = "JSON") -> str:
    """Strict, indented, key-sorted JSON (objects JSON lacks become ``str``); NaN/inf raise a ValueError.

    The error names ``context`` (e.g. the file) and the key path of every non-finite value, so a
    diverged metric is found at its source instead of being written as the invalid token ``NaN``.
    """
    try:
        return json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    except ValueError:
        bad = list(_nonfinite_paths(data))
        if not bad:
            raise
        shown = ", ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        raise ValueError(f"{context}: refusing to write non-finite numbers (NaN/inf are not valid JSON) at {shown}; "
                         "expected finite numbers (store None for a missing value)") from None


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as strict, indented JSON atomically (see :func:`dumps_json`); ``path`` is untouched on error."""
    text = dumps_json(data, str(path))
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
