"""File plumbing for checkpoints: safe unpickling, atomic writes, sha256 provenance.

Only :mod:`domain_guidance.io.checkpoints` and its format helpers should need this module.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch
from .atomic import atomic_path as atomic_file  # noqa: F401 - the shared atomic file writer
from .atomic import fsync_path

# Globals a checkpoint may need beyond torch's weights_only allowlist. DiT/SiT training
# checkpoints pickle their argparse arguments as ``args``; nothing else is ever allowed.
SAFE_EXTRA_GLOBALS: dict[str, type] = {"argparse.Namespace": argparse.Namespace}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written; the message names the file and the fault."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file, or of a checkpoint directory (names + contents of its files)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _unsafe_globals(path: Path, err: Exception) -> list[str]:
    if zipfile.is_zipfile(path):
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    return re.findall(r"GLOBAL (\S+) was not an allowed global", str(err))  # legacy (non-zip) format


def safe_torch_load(path: str | os.PathLike, expected: str = "a torch checkpoint (written by torch.save)") -> Any:
    """``torch.load(weights_only=True)`` on CPU; allowlists only ``argparse.Namespace``.

    A file that does not load (empty, truncated, text) is refused in one line naming the file, what it
    holds and ``expected`` (the format the caller needs).

    Any other global in the pickle is refused with a :class:`CheckpointError` naming it: the
    file is never loaded with ``weights_only=False``. Zip-format files are memory-mapped, so a
    training checkpoint's optimizer state is not read into memory unless used; copy the tensors
    you keep (an in-place rewrite of the file would otherwise change them).
    """
    path = Path(path)
    mmap = zipfile.is_zipfile(path)
    allowed: list[type] = []
    while True:
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            needed = _unsafe_globals(path, e)
            if not needed:
                raise CheckpointError(unreadable(path, expected, e)) from None
            bad = [g for g in needed if g not in SAFE_EXTRA_GLOBALS]
            more = [SAFE_EXTRA_GLOBALS[g] for g in needed if g in SAFE_EXTRA_GLOBALS and SAFE_EXTRA_GLOBALS[g] not in allowed]
            if bad or not more:
                raise CheckpointError(
                    f"{path}: refusing to load an unsafe pickle: it needs the global(s) {bad or needed}, which "
                    f"torch.load(weights_only=True) does not allow (allowed extras: {sorted(SAFE_EXTRA_GLOBALS)}); "
                    "convert it to safetensors in a trusted environment"
                ) from None
            allowed += more
        except Exception as e:  # noqa: BLE001 - truncated, corrupt or not a checkpoint (a text file gives KeyError: 101)
            raise CheckpointError(unreadable(path, expected, e)) from None


def _what_is(path: Path) -> str:
    """A few words on what a file that failed to parse actually holds."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return f"a zip archive of {size} bytes (truncated or not a checkpoint?)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"{size} bytes of binary data (truncated or another format?)"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        first = " ".join(text.split())[:40]
        return f"a text file of {size} bytes starting {first!r}"
    return f"{size} bytes of binary data (truncated or another format?)"


def unreadable(path: str | os.PathLike, expected: str, err: BaseException) -> str:
    """One-line message for a file that cannot be read as ``expected``: the file, what it holds, the reader's error."""
    path = Path(path)
    detail = " ".join(str(err).split())
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return f"{path}: cannot read as {expected}; it is {_what_is(path)} ({type(err).__name__}: {detail or 'no detail'})"


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` whose errors (truncated or foreign file) name the file."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError...: the message says which file
        raise CheckpointError(unreadable(path, "safetensors", e)) from None


def safetensors_header(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` header (``{}`` if none); errors name the file."""
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            return f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - see load_safetensors
        raise CheckpointError(unreadable(path, "safetensors", e)) from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replaceable: tuple[str, ...]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it is fsynced and renamed to ``path``.

    An existing ``path`` is replaced only if every entry in it is one of the ``replaceable`` file
    names (a checkpoint): files we did not write are never deleted. It is first renamed to ``.<name>.old-*`` and deleted
    after the new directory is in place, so a killed write never leaves a half-written checkpoint
    at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in replaceable) if path.is_dir() else [path.name]
        if foreign:
            raise CheckpointError(f"{path}: exists and is not a checkpoint directory (it holds {foreign[:5]}, "
                                  f"expected only {sorted(replaceable)}); not replacing it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_path(f)
        fsync_path(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_path(path.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def interrupted_save_hint(path: Path) -> str:
    """A sentence pointing at a previous checkpoint left by an interrupted directory save, if any."""
    olds = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
    return f" (an interrupted save left the previous checkpoint at {olds[-1]})" if olds else ""
