"""``reproduce``: prepare -> fine-tune -> sample (unguided, CFG, DoG) -> evaluate -> a table row, resumable.

Every stage leaves its result in the output folder and is skipped when that result is there and
was made from the same inputs: the prepared dataset (``data/manifest.json``), the fine-tune
(``finetune/``, continued exactly from its last checkpoint), the samples (``samples/<method>-w<w>/``,
resumable shards keyed by the settings and weights), the scores (``metrics/<method>-w<w>.<protocol>.json``,
keyed by the samples and the reference), reference statistics (``reference/``) and the row
(``results.json``, ``table.md``). Under ``torchrun`` the fine-tune and the sampling use every
process; preparing and scoring run on rank 0 while the others wait.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...io.atomic import write_json
from ...io.data.prepare import prepare_dataset, read_manifest
from ...io.distributed import DistInfo, barrier, init_distributed, shutdown
from ...io.locks import folder_lock
from ..generate import GenerationSettings, balanced_labels, generate, load_models
from ..training import find_latest, resolve_config, train
from .benchmarks import benchmark
from .comparability import recipe_of, split_of
from .config import STAGES, ReproduceConfig
from .inputs import check_benchmark_data, check_finetune_inputs, check_runnable, finetune_inputs
from .scoring import score_samples
from .table import write_row

CONFIG_NAME = "reproduce_config.json"
WAIT_S = 24 * 3600.0  # other ranks wait this long while rank 0 prepares or scores (hours on a full dataset)


def data_dir(cfg: ReproduceConfig, out: Path) -> Path:
    return Path(cfg.data).expanduser() if cfg.data else out / "data"


def train_config(cfg: ReproduceConfig, out: Path, progress: bool | None = None) -> Any:
    """The TrainConfig of the fine-tune: the training preset < the row's overrides < data, base, vae, out."""
    over: dict[str, Any] = json.loads(json.dumps(cfg.train))
    over.setdefault("data", {})["dataset"] = str(data_dir(cfg, out) / cfg.train_split)
    over["out"] = str(out / "finetune")
    if cfg.base:
        over["base"] = cfg.base
    if cfg.vae:
        over["vae"] = cfg.vae
    if progress is False:
        over["progress"] = False
    return resolve_config(cfg.train_preset, overrides=over)


def guide_path(base: str | None) -> str | None:
    """The DoG guide: the pre-trained checkpoint (a run directory's latest checkpoint)."""
    if base is None:
        return None
    p = Path(base).expanduser()
    if (p / "checkpoints").is_dir():
        latest = find_latest(p)
        if latest is None:
            raise FileNotFoundError(f"base {p}: a run directory without a complete checkpoint")
        return str(latest)
    return str(p)


def stage_prepare(cfg: ReproduceConfig, out: Path, progress: bool) -> dict[str, Any]:
    folder = data_dir(cfg, out)
    manifest = read_manifest(folder)
    if manifest is not None and not cfg.source:
        return {**manifest, "reused": True}
    if (folder / cfg.train_split).is_dir() and not cfg.source:
        return {"dataset": cfg.benchmark, "reused": True,
                "warnings": [f"{folder} has no manifest.json (not made by `dog data prepare`): "
                             "split and hashes unknown"]}
    if not cfg.source:
        raise ValueError(f"no prepared data in {folder}: pass --from ARCHIVE (what you downloaded for "
                         f"{cfg.benchmark}) or --data DIR (a folder made by `dog data prepare {cfg.benchmark}`)")
    return prepare_dataset(cfg.benchmark, cfg.source if len(cfg.source) > 1 else cfg.source[0], folder,
                           progress=progress, remedy=f"dog reproduce does not replace {folder}: choose a new --out "
                           f"for this download, or prepare it with `dog data prepare {cfg.benchmark} --from ... "
                           "--out DIR` and pass --data DIR", **cfg.prepare_options)


def check_before_work(cfg: ReproduceConfig, out: Path, stop_after: str) -> None:
    """Refuse before anything is written: a run that cannot draw DoG, data that is not the benchmark's, a
    fine-tune in ``out`` made from other data or base weights (see ``inputs``)."""
    check_runnable(cfg, stop_after)
    folder = data_dir(cfg, out)
    if cfg.data and not cfg.source and not (folder / cfg.train_split).is_dir():
        raise FileNotFoundError(f"--data {folder}: no {cfg.train_split}/ folder inside; expected a folder made by "
                                f"`dog data prepare {cfg.benchmark}` (or pass --from with the download)")
    if cfg.source or not (folder / cfg.train_split).is_dir():
        return  # prepared by this run: `dog data prepare` checks the folder, stage_finetune the fine-tune
    check_benchmark_data(cfg, folder, read_manifest(folder))
    if STAGES.index(stop_after) >= STAGES.index("finetune") and find_latest(out / "finetune") is not None:
        check_finetune_inputs(out, finetune_inputs(folder / cfg.train_split, guide_path(cfg.base)), True)


def _checkpoint_step(ckpt: Path | None) -> int:
    return int(ckpt.name.split("_")[-1]) if ckpt is not None and ckpt.name.startswith("step_") else -1


def stage_finetune(cfg: ReproduceConfig, out: Path, progress: bool) -> dict[str, Any]:
    tcfg = train_config(cfg, out, progress)
    ckpt = find_latest(tcfg.out)
    check_finetune_inputs(out, finetune_inputs(data_dir(cfg, out) / cfg.train_split, guide_path(cfg.base)),
                          ckpt is not None)
    if _checkpoint_step(ckpt) >= tcfg.steps:
        return {"checkpoint": str(ckpt), "step": _checkpoint_step(ckpt), "skipped": True}
    result = train(tcfg, resume=True)
    return {"checkpoint": str(result.checkpoint), "step": result.step, "skipped": False}


def sample_dirs(cfg: ReproduceConfig, out: Path) -> dict[str, Path]:
    return {m: out / "samples" / f"{m}-w{1.0 if m == 'unguided' else cfg.scale:g}" for m in cfg.methods}


def stage_sample(cfg: ReproduceConfig, out: Path, dist: DistInfo, progress: bool) -> dict[str, Any]:
    ckpt = find_latest(out / "finetune")
    if ckpt is None:
        raise FileNotFoundError(f"{out / 'finetune'} holds no complete checkpoint: run the finetune stage first")
    tcfg = train_config(cfg, out)
    guide = None if tcfg.mode == "lora" else guide_path(cfg.base)
    # what the fine-tune declared its base predicts: a raw SiT .pt guide cannot say it (read as eps, DoG refused)
    declared = "auto" if tcfg.base_reinterpret else tcfg.base_prediction
    models = load_models(str(ckpt), guide, vae=cfg.vae, device=dist.device, prediction=declared)
    labels = balanced_labels(cfg.num_samples, models.config.num_classes)
    seeds = list(range(cfg.seed, cfg.seed + cfg.num_samples))
    done: dict[str, Any] = {}
    for method, folder in sample_dirs(cfg, out).items():
        why = models.unavailable(method)
        if why is not None:
            done[method] = {"skipped": why}
            continue
        settings = GenerationSettings(method=method, scale=cfg.scale, channels=cfg.channels, sampler=cfg.sampler,
                                      steps=cfg.steps, seeds=seeds, labels=labels)
        record = generate(settings, models, folder, batch_size=cfg.sample_batch_size, shard_size=cfg.shard_size,
                          dist=dist, progress=progress)
        done[method] = {"dir": str(folder), "key": record["key"], "generated_now": record.get("generated_now")}
    return {"checkpoint": str(ckpt), "methods": done}


def _save_config(cfg: ReproduceConfig, out: Path) -> None:
    """Record the config; a rerun into the same folder with other settings that change results is refused."""
    path = out / CONFIG_NAME
    if path.is_file():
        old = json.loads(path.read_text())
        keep = ("device", "sample_batch_size", "eval_batch_size", "source", "prepare_options", "methods",
                "eval_protocols", "metrics", "num_samples", "protocol", "shard_size", "reference_max_images",
                "reference_seed", "inception_weights", "dinov2_model", "fd_method")  # scores are keyed by these
        # a key unset before (None) may be given now
        diffs = [k for k, v in cfg.to_dict().items() if k not in keep and old.get(k) not in (None, v)]
        if diffs:
            raise ValueError(f"{out} holds a reproduction with other settings ({', '.join(diffs)}: "
                             f"{[old.get(k) for k in diffs]} -> {[getattr(cfg, k) for k in diffs]}); "
                             "choose another --out (nothing is overwritten)")
    write_json(path, cfg.to_dict())


def reproduce(cfg: ReproduceConfig, out: str | Path, *, stop_after: str = "table", progress: bool = True,
              extractors: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the chain up to ``stop_after`` (one of STAGES); returns what each stage did (rank 0: the row too).

    ``extractors`` (``{"inception": ..., "dinov2": ...}``) replaces the feature networks (tests).
    """
    if stop_after not in STAGES:
        raise ValueError(f"stop_after: expected one of {list(STAGES)}, got {stop_after!r}")
    benchmark(cfg.benchmark)
    check_before_work(cfg, Path(out).expanduser(), stop_after)
    with folder_lock(out):  # torchrun: rank 0 holds it (the RANK variable), for every stage
        return _reproduce_locked(cfg, Path(out).expanduser(), stop_after, progress, extractors)


def _reproduce_locked(cfg: ReproduceConfig, out: Path, stop_after: str, progress: bool,
                      extractors: dict[str, Any] | None) -> dict[str, Any]:
    last = STAGES.index(stop_after)
    report: dict[str, Any] = {"benchmark": cfg.benchmark, "out": str(out), "stages": {}}
    times = report["stages"]
    dist = init_distributed(cfg.device, timeout_s=WAIT_S)
    try:
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            _save_config(cfg, out)
            t0 = time.perf_counter()
            manifest = stage_prepare(cfg, out, progress)
            times["prepare"] = {"seconds": round(time.perf_counter() - t0, 2), "reused": bool(manifest.get("reused")),
                                "warnings": manifest.get("warnings", [])}
        barrier(dist)
    finally:
        shutdown(dist)  # the training loop joins (and leaves) the process group by itself
    if last >= STAGES.index("finetune"):
        t0 = time.perf_counter()
        times["finetune"] = {**stage_finetune(cfg, out, progress), "seconds": round(time.perf_counter() - t0, 2)}
    if last < STAGES.index("sample"):
        return report
    dist = init_distributed(cfg.device, timeout_s=WAIT_S)
    try:
        t0 = time.perf_counter()
        times["sample"] = {**stage_sample(cfg, out, dist, progress), "seconds": round(time.perf_counter() - t0, 2)}
        if dist.is_main and last >= STAGES.index("evaluate"):
            t0 = time.perf_counter()
            scores = score_samples(cfg, out, data_dir(cfg, out) / cfg.train_split, sample_dirs(cfg, out),
                                   device=str(dist.device), progress=progress, extractors=extractors)
            times["evaluate"] = {"seconds": round(time.perf_counter() - t0, 2),
                                 "computed": sum(1 for s in scores if not s.get("reused"))}
            if last >= STAGES.index("table"):
                split = split_of(read_manifest(data_dir(cfg, out)), cfg.train_split)
                report["rows"] = write_row(cfg, out, scores, split, recipe_of(train_config(cfg, out)))
        barrier(dist)
    finally:
        shutdown(dist)
    return report
