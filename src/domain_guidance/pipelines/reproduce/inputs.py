"""What ``dog reproduce`` checks about its inputs before it reuses a stage or starts one.

- The data is the benchmark's: a prepared folder's manifest names its dataset; a folder without one
  must hold the benchmark's number of classes. Both are named when they differ.
- DoG can be drawn: it needs the pre-trained checkpoint (``--base``) as its guide; a run without one
  is refused before any work, not after the fine-tune.
- The fine-tune is reused or resumed only from the same inputs: ``OUT/inputs.json`` records the
  content fingerprint of the training folder and the sha256 of the base weights (``io.fingerprints``)
  when the fine-tune starts; a rerun with other data (``--data`` elsewhere, or the same folder with
  other bytes) or other base weights is refused naming which input changed, before anything is
  written when the data is already there (then again when the fine-tune stage starts). Each check
  reads the training folder once (BLAKE2b, about 1 GB/s per core): seconds next to hours of training.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...io.atomic import write_json
from ...io.fingerprints import check_stage_inputs, fingerprint_path, fingerprint_weights
from .benchmarks import benchmark
from .config import STAGES, ReproduceConfig

INPUTS_NAME = "inputs.json"


def _names(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_benchmark_data(cfg: ReproduceConfig, folder: Path, manifest: dict[str, Any] | None) -> None:
    """Refuse data that is not the benchmark's, naming what the folder holds and what the row needs."""
    b = benchmark(cfg.benchmark)
    want = f"{b.name} ({b.title}, {b.num_classes} classes)"
    fix = f"pass --data with the folder `dog data prepare {b.name}` made, or --from with the {b.title} download"
    if manifest is not None:
        got = manifest.get("dataset")
        if got != b.name:
            names = [str(c.get("name")) for c in manifest.get("classes", [])]
            raise ValueError(f"{folder} holds a prepared {got!r} ({manifest.get('num_classes')} classes: "
                             f"{_names(names)}), but this row is {want}; {fix}")
        return
    split = folder / cfg.train_split
    classes = sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) != b.num_classes:
        raise ValueError(f"{split} holds {len(classes)} class folders ({_names(classes)}) and no manifest.json, but "
                         f"this row is {want}; {fix}")


def check_runnable(cfg: ReproduceConfig, stop_after: str) -> None:
    """Refuse, before any work, a run that cannot produce the rows it is asked for."""
    if STAGES.index(stop_after) >= STAGES.index("finetune") and not cfg.base and "dog" in cfg.methods:
        raise ValueError("dog reproduce: DoG needs the pre-trained model as its guide (and the fine-tune starts "
                         "from it), but no --base was given: pass --base CHECKPOINT (for --protocol cpu-tiny, e.g. "
                         "the run folder of `dog pretrain --preset cpu-tiny`), or leave DoG out with "
                         "--set methods=[unguided,cfg]")
    if STAGES.index(stop_after) >= STAGES.index("sample"):
        check_sampler_fits(cfg)


def check_sampler_fits(cfg: ReproduceConfig) -> None:
    """Refuse, before the fine-tune, a sampler that cannot integrate what the fine-tune's preset declares it
    predicts (the published DDPM with ``sit-xl2-imagenet-published``, a velocity model, failed only when
    sampling began, after 24,000 fine-tune steps)."""
    from ...core.sampling import SAMPLERS, get_sampler
    from ..training import PRESETS

    declared = cfg.train.get("base_prediction", PRESETS.get(cfg.train_preset, {}).get("base_prediction", "auto"))
    spec = get_sampler(cfg.sampler)
    if declared != "auto" and declared not in spec.predictions:
        fits = sorted(name for name, other in SAMPLERS.items() if declared in other.predictions)
        raise ValueError(f"sampler {cfg.sampler!r} integrates {'/'.join(spec.predictions)} predictions, but the "
                         f"fine-tune ({cfg.train_preset}) predicts {declared}: pass --set sampler=NAME with one of "
                         f"{fits}")


def finetune_inputs(data: Path, base: str | None) -> dict[str, Any]:
    """Content fingerprints of what the fine-tune reads: the training folder's bytes, the base weights' sha256."""
    return {"data": fingerprint_path(data), "base": fingerprint_weights(base) if base else None}


def check_finetune_inputs(out: Path, current: dict[str, Any], has_checkpoint: bool, record: bool = True) -> None:
    """Refuse to reuse or resume ``OUT/finetune`` when its checkpoints were made from other inputs.

    Without a checkpoint nothing was made yet: with ``record`` the current inputs are written (rank 0)
    just before training starts, replacing the record of an attempt that saved nothing.
    """
    path = out / INPUTS_NAME
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if has_checkpoint:
        check_stage_inputs(f"the fine-tune in {out / 'finetune'}", saved.get("finetune"), current,
                           "its checkpoints, samples and scores belong to the recorded inputs: choose another --out "
                           "for these inputs, or restore the recorded data folder and base weights")
    elif record and int(os.environ.get("RANK", "0")) == 0:
        write_json(path, {**saved, "finetune": current})
