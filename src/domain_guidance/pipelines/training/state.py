"""Checkpoints of a run and exact resume.

Layout of ``<run>/checkpoints/``::

    step_0000100/              one complete checkpoint (never visible half-written)
      model.safetensors        full / scratch: EMA weights, official keys   } what `dog sample`
      config.json              the trained model's DiTConfig               } and load_model read
      metadata.json            step, base reference, training config       }
      (LoRA instead: lora.safetensors = EMA adapter + EMA target table, lora.json = configs + base path/sha256)
      train_state.pt           resume state: raw trained weights, EMA, optimizer, step, data position, RNG
    latest -> step_0000100     pointer (a symlink; a text file holding the name where symlinks fail)

A checkpoint is assembled in a hidden staging directory (each file written to a temporary name,
fsynced, renamed), then the directory is renamed into place and only then is ``latest`` moved
(``os.replace``, atomic). A kill at any moment leaves the previous checkpoint and pointer intact;
leftover staging directories are removed on the next start. Older checkpoints beyond
``keep_last`` are deleted after the pointer moved.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ...io.atomic import fsync_path as _fsync  # files: errors raise; directories: best effort
from ...io.checkpoint_files import unreadable
from ...io.fingerprints import StageInputsChanged, input_differences

CKPT_DIR, LATEST, STATE_NAME = "checkpoints", "latest", "train_state.pt"
STATE_FORMAT = "domain_guidance/train_state"
_STEP_RE = re.compile(r"^step_(\d+)$")


def step_name(step: int) -> str:
    return f"step_{step:07d}"


def _write_train_state(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` (a temporary name; the caller renames). Tests patch this to fail mid-way."""
    torch.save(state, path)


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint (one holding train_state.pt), oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP_RE.match(d.name)
        if m and d.is_dir() and not d.is_symlink() and (d / STATE_NAME).is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def find_latest(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest`` points to; the newest complete one if the pointer is missing or broken."""
    root = Path(run_dir) / CKPT_DIR
    pointer = root / LATEST
    target: Path | None = None
    if pointer.is_symlink():
        target = root / os.readlink(pointer)
    elif pointer.is_file():
        target = root / pointer.read_text().strip()
    if target is not None and (target / STATE_NAME).is_file():
        return target
    found = complete_checkpoints(Path(run_dir))
    return found[-1][1] if found else None


def _point_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    try:
        os.symlink(name, tmp)
    except (OSError, NotImplementedError):  # no symlinks here: a text pointer
        tmp.write_text(name + "\n")
        _fsync(tmp)
    os.replace(tmp, root / LATEST)
    _fsync(root)


def clean_stale(run_dir: str | os.PathLike) -> list[Path]:
    """Remove staging directories and temporary files left by a killed checkpoint write."""
    root = Path(run_dir) / CKPT_DIR
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints (never the one ``latest`` names)."""
    latest = find_latest(run_dir)
    ckpts = complete_checkpoints(run_dir)
    removed = []
    for _, d in ckpts[:-keep_last] if keep_last > 0 else []:
        if latest is not None and d.resolve() == latest.resolve():
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def save_checkpoint_dir(run_dir: str | os.PathLike, step: int, state: dict[str, Any],
                        export: Callable[[Path], None], keep_last: int) -> Path:
    """Write checkpoint ``step`` atomically, move ``latest`` to it, prune; returns its directory.

    ``export(path)`` writes the sampling files into the new directory ``path`` (it creates it);
    ``state`` (train_state.pt) is added last.
    """
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    staging = root / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        export(staging)
        staging.mkdir(exist_ok=True)
        tmp = staging / f".{STATE_NAME}.tmp"
        _write_train_state(state, tmp)
        _fsync(tmp)
        os.replace(tmp, staging / STATE_NAME)
        _fsync(staging)
        old = None
        if final.exists():  # re-saving a step after resuming from an older checkpoint
            old = root / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(staging, final)
        _fsync(root)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(final, 0o777 & ~umask)  # staging dirs are private (mkdtemp); the checkpoint is not
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point_latest(root, final.name)
    prune(Path(run_dir), keep_last)
    return final


def load_train_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The resume state of a checkpoint directory (or a train_state.pt file), on the CPU."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - empty, truncated zip, bad pickle: say which file and what it holds
        raise ValueError(unreadable(path, f"a training state ({STATE_NAME} written by dog finetune)", e)) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a training state (expected format {STATE_FORMAT!r})")
    return state


def capture_rng() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, python); the loop reseeds per step, this is belt and braces."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


# Keys that may change between a run and its resumption without changing the trajectory.
RESUME_FREE = ("steps", "log_every", "sample_every", "ckpt_every", "keep_last", "progress", "tensorboard", "device",
               "dist_timeout_s", "out", "preset", "debug_nan_at_step", "debug_kill_at_step", "data.num_workers",
               "data.cache_path", "grid.", "compile")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_overrides":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_differences(saved: dict[str, Any], current: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """Config keys whose change would make a resumed run differ from an uninterrupted one.

    A key missing from ``saved`` (a field added after the checkpoint was written) counts as its
    value in ``defaults``, so a newer version resumes an older run whose settings it did not know.
    """
    a, b = {**_flatten(defaults or {}), **_flatten(saved)}, _flatten(current)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if any(k == f or (f.endswith(".") and k.startswith(f)) for f in RESUME_FREE):
            continue
        if a.get(k) != b.get(k):
            diffs.append(f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}")
    return diffs


def _names(names: list[Any], limit: int = 12) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


def data_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """How the training data changed since a checkpoint (``data_fingerprint`` dicts): empty when unchanged."""
    diffs = []
    if saved.get("images") != current.get("images"):
        diffs.append(f"images {saved.get('images')} -> {current.get('images')}")
    a, b = list(saved.get("classes") or []), list(current.get("classes") or [])
    if a != b:
        change = f"classes ({len(a)}) {_names(a)} -> ({len(b)}) {_names(b)}"
        gone, new = [c for c in a if c not in b], [c for c in b if c not in a]
        moves = ([f"removed {_names(gone)}"] if gone else []) + ([f"added {_names(new)}"] if new else [])
        change += f" ({', '.join(moves)})" if moves else " (renamed or reordered)"
        diffs.append(change)
    if saved.get("selection_sha256") != current.get("selection_sha256"):
        diffs.append(f"file list / selection hash {str(saved.get('selection_sha256'))[:12]} -> "
                     f"{str(current.get('selection_sha256'))[:12]}")
    elif "content_sha256" in saved and saved.get("content_sha256") != current.get("content_sha256"):
        diffs.append(f"image contents changed under the same file names (content hash "
                     f"{str(saved.get('content_sha256'))[:12]} -> {str(current.get('content_sha256'))[:12]})")
    if "vae_sha256" in saved and saved.get("vae_sha256") != current.get("vae_sha256"):
        diffs.append(f"VAE weights (the latents trained on) {str(saved.get('vae_sha256'))[:12]} -> "
                     f"{str(current.get('vae_sha256'))[:12]}")
    return diffs


def check_resume_inputs(checkpoint: Path | None, state: dict[str, Any], fingerprint: dict[str, Any],
                        inputs: dict[str, Any], where: str) -> list[str]:
    """Raise ``StageInputsChanged`` when the data (``data_fingerprint``) or the base weights (``inputs``:
    their sha256) differ from what ``state`` recorded; returns notes for what an older checkpoint did not
    record (resumed without that check). ``where`` names the settings (data folder, base path)."""
    saved, recorded, notes = state.get("data"), state.get("inputs"), []
    for what, record in (("data fingerprint", saved), ("base weights' sha256", recorded)):
        if record is None:
            notes.append(f"checkpoint {checkpoint} records no {what} (saved by an older version): resuming "
                         "without checking it is unchanged")
    if saved is not None and "content_sha256" not in saved:
        notes.append(f"checkpoint {checkpoint} records file names, not contents: resuming without checking that "
                     "the images' contents are unchanged")
    data = data_differences(saved, fingerprint) if saved is not None else []
    weights = [f"{d} (sha256 of the base weights)" for d in (input_differences(recorded, inputs) if recorded else [])]
    if data or weights:
        what = " and ".join(w for w, d in (("data", data), ("base weights", weights)) if d)
        raise StageInputsChanged(f"cannot resume {checkpoint}: {what} changed since the checkpoint ({where}): "
                                 + "; ".join(data + weights) + "; restore them, or start a new run with another --out")
    return notes
