"""``dog reproduce NAME --dry-run``: the published chain at full size, random weights, a tiny fake target.

Per model family (DiT-XL/2, SiT-XL/2) it writes random stand-ins of the published networks
(``fullsize``), a fake download of the row's dataset (2 classes, 2 images each, 256 px) and runs the
real stages of ``run``: prepare -> latent cache -> 2 fine-tune steps (full, then LoRA; the published
optimizer and EMA, gradient checkpointing on) with a checkpoint save -> load round trip -> 2 images
per method (unguided, CFG, DoG; DDPM 2 steps, SiT: sde-euler 2 steps) decoded by the VAE -> FID and
FD_DINOv2 under both evaluation protocols -> a table, then activation probes for the memory plan.
Each stage is measured (``measure``). Nothing it writes can pass for a result: the output folder is
marked ``DRY_RUN.md``, a folder holding a reproduction is refused, every row says "dry run, random
weights", and the files are ``dry_run.json`` / ``dry_run.md`` (never ``results.json`` / ``table.md``).
"""
from __future__ import annotations

import gc
import io
import json
import tarfile
from functools import partial
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...io.atomic import write_json
from ...io.distributed import DistInfo
from ..training import find_latest
from . import fullsize, memory_plan
from .config import ReproduceConfig, resolve
from .measure import GpuAssumption, StageRecord, measure, pin_mmap_threshold, stage_table
from .run import data_dir, sample_dirs, stage_finetune, stage_prepare, stage_sample, train_config
from .scoring import score_samples
from .table import rows_of

MARKER = "DRY_RUN.md"
RESULT_FILES = ("results.json", "table.md", "reproduce_config.json")  # what a real reproduction leaves
ROW_NOTE = "dry run, random weights"
# The published run's work per stage: 24,000 steps x 32 images; 10,000 samples x 50 steps per method.
FULL_TRAIN_IMAGES, FULL_SAMPLES, FULL_STEPS = 24_000 * 32, 10_000, 50


def check_dry_out(out: Path) -> None:
    """Refuse an output folder that holds (or lies inside) a reproduction's results."""
    for folder in [out, *out.parents][:4]:
        found = [n for n in RESULT_FILES if (folder / n).exists()]
        if found and not (folder / MARKER).exists():
            raise ValueError(f"--dry-run --out {out}: {folder} holds a reproduction ({', '.join(found)}); a dry run "
                             "never writes into a results folder: choose a separate --out (e.g. runs/dry-run)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(f"--dry-run --out {out}: a non-empty folder without {MARKER}; choose an empty or new folder")


def fake_download(path: Path, classes: int = 2, per_class: int = 2, size: int = 256, seed: int = 0) -> Path:
    """A Food-101-layout tar (``food-101/images``, ``meta/{train,test,classes}.txt``) of smooth random JPEGs."""
    rng = np.random.default_rng(seed)
    names = [f"dry_class_{c}" for c in range(classes)]
    train, test, files = [], [], {}
    for cls in names:
        for k in range(per_class):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)  # (size, size, 3)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            files[f"food-101/images/{cls}/{k}.jpg"] = buf.getvalue()
            (test if k == per_class - 1 else train).append(f"{cls}/{k}")
    files["food-101/meta/train.txt"] = ("\n".join(train) + "\n").encode()
    files["food-101/meta/test.txt"] = ("\n".join(test) + "\n").encode()
    files["food-101/meta/classes.txt"] = ("\n".join(names) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class DryRunSize:
    """How much work the dry run does (the networks are always full size)."""

    train_steps: int = 2
    batch: int = 2  # fine-tune batch
    samples: int = 2  # per method (FID needs 2)
    sample_batch: int = 2
    sample_steps: int = 2
    methods: tuple[str, ...] = ("unguided", "cfg", "dog")
    lora: bool = True  # also a LoRA fine-tune, sampled with DoG (adapter-off guide)
    probe: bool = True  # activation probes for the memory plan


def dry_config(family: str, weights: dict[str, str], source: Path, lora: bool,
               size: DryRunSize = DryRunSize()) -> ReproduceConfig:
    """The published protocol with only the amount of work cut (``size``) and gradient checkpointing on."""
    preset = (fullsize.LORA_PRESETS if lora else fullsize.TRAIN_PRESETS)[family]
    train = {"steps": size.train_steps, "batch_size": size.batch, "ckpt_every": size.train_steps, "log_every": 1,
             "sample_every": 0, "keep_last": 1, "tensorboard": False, "gradient_checkpointing": True, "device": "cpu"}
    over = {"source": [str(source)], "base": weights["base"], "vae": weights["vae"], "dinov2_model": weights["dinov2"],
            "train_preset": preset, "train": train, "num_samples": size.samples, "methods": list(size.methods),
            "steps": str(size.sample_steps), "sampler": "ddpm" if family == "dit" else "sde-euler",
            "sample_batch_size": size.sample_batch, "shard_size": size.samples, "eval_batch_size": 4, "device": "cpu"}
    if weights.get("inception"):
        over["inception_weights"] = weights["inception"]
    return resolve("food101", "published", over)


def write_weights(out: Path, family: str, given: dict[str, str | None], records: list[StageRecord],
                  gpu: GpuAssumption) -> dict[str, Any]:
    """Random full-size stand-ins (or the local weights given) where the pipeline reads them."""
    weights: dict[str, Any] = {"inception": given.get("inception"), "params": {}}
    out.mkdir(parents=True, exist_ok=True)
    with measure("networks", gpu, records, count_flops=False, log=out / "stages.jsonl") as rec:
        for key, write, where in (("base", fullsize.write_random_base, out / "weights" / f"{family}-base.pt"),
                                  ("vae", fullsize.write_random_vae, out / "weights" / "sd-vae-ft-ema"),
                                  ("dinov2", fullsize.write_random_dinov2, out / "weights" / "dinov2-large")):
            if given.get(key):
                weights[key] = str(given[key])
                continue
            if key == "base":
                info = write(where, family)
            else:
                info = write(where)
            weights[key], weights["params"][key] = info["path"], info["params"]
        weights["params"]["inception"] = fullsize.inception_params()
        rec.info = dict(weights["params"])
    return weights


def _checkpoint_roundtrip(ckpt: Path, family: str) -> dict[str, Any]:
    """Load the saved fine-tune back: the exported EMA weights equal the training state's, and load strictly
    into the official DiT layout (a LoRA checkpoint: its base plus adapter through ``load_model``)."""
    from safetensors import safe_open

    from ...core.models import DiT
    from ...io.checkpoints import load_model

    loaded = load_model(ckpt)
    info: dict[str, Any] = {"checkpoint": str(ckpt), "config": loaded.config.to_dict()}
    state = torch.load(ckpt / "train_state.pt", map_location="cpu", mmap=True, weights_only=True)
    weights = ckpt / "model.safetensors"
    if weights.is_file():  # full fine-tune: official key layout, strict
        with safe_open(str(weights), "pt") as f:
            exported = {k: f.get_tensor(k) for k in f.keys()}
        with torch.device("meta"):
            official = DiT(loaded.config)
        official.load_state_dict(exported, strict=True, assign=True)
        info["official_layout_strict"] = True
        info["label_rows"] = int(exported["y_embedder.embedding_table.weight"].shape[0])
        bad = [k for k, v in exported.items() if k in state["ema"] and not torch.equal(v, state["ema"][k])]
        if bad:
            raise RuntimeError(f"{ckpt}: exported weights differ from the training state's EMA: {bad[:3]}")
        info["tensors_compared"] = len(exported)
    del loaded, state
    gc.collect()
    return info


def _rescale_decode(rec: StageRecord, images: int, per_method: int, gpu: GpuAssumption, log: Path) -> None:
    """The sampling stage's full-run projection with its decodes scaled by images, not by network steps."""
    decode = images * fullsize.vae_decode_flops()
    steps = rec.flops - decode
    full = steps * (rec.full_run_scale or 0.0) + decode * FULL_SAMPLES / per_method
    rec.full_run_gpu_hours = gpu.seconds(full) / 3600
    rec.info["decode_flops"] = decode
    with open(log, "a") as f:  # the corrected record follows the first one
        f.write(json.dumps(rec.to_dict(), default=str) + "\n")


def dry_rows(cfg: ReproduceConfig, scores: list[dict[str, Any]], tcfg: Any, label: str) -> list[dict[str, Any]]:
    from .comparability import recipe_of

    rows = rows_of(cfg, scores, "all", recipe_of(tcfg))
    return [{"note": ROW_NOTE, "fine_tune": label, **r, "comparable_to_published": False,
             "differs_from_published": ROW_NOTE} for r in rows]


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    """The dry run's score rows; the first column of every row says what they are."""
    lines = ["| note | model | fine-tune | method | w | protocol | N | FID | FD_DINOv2 |", "|---" * 9 + "|"]
    for r in rows:
        fid, fd = r.get("fid", float("nan")), r.get("fd_dinov2", float("nan"))
        lines.append(f"| {r['note']} | {r['model']} | {r['fine_tune']} | {r['method']} | {r['w']:g} | "
                     f"{r['protocol']} | {r['num_samples']} | {fid:.2f} | {fd:.2f} |")
    return "\n".join(lines) + "\n"


def run_family(out: Path, family: str, given: dict[str, str | None], gpu: GpuAssumption,
               records: list[StageRecord], size: DryRunSize = DryRunSize()) -> dict[str, Any]:
    """The whole chain for one family (``dit`` or ``sit``) in ``out``; appends stage records; returns its rows."""
    stage = partial(measure, log=out / "stages.jsonl")  # each record also lands in stages.jsonl at once
    weights = write_weights(out, family, given, records, gpu)
    source = fake_download(out / "download" / "food-101.tar")
    dist = DistInfo(device=torch.device("cpu"))
    rows: list[dict[str, Any]] = []
    for lora in (False, True) if size.lora else (False,):
        kind = "lora" if lora else "full"
        cfg = dry_config(family, weights, source, lora, size)
        run_out = out / kind
        run_out.mkdir(parents=True, exist_ok=True)
        write_json(run_out / "dry_run_config.json", cfg.to_dict())
        if not lora:
            with stage("prepare", gpu, records, count_flops=False) as rec:
                rec.info = {k: v for k, v in stage_prepare(cfg, run_out, False).items() if k in ("counts", "reused")}
            prepared = data_dir(cfg, run_out)
            with stage("latent cache", gpu, records, full_run_scale=101_000 / 4) as rec:
                rec.info = memory_plan.build_cache(train_config(cfg, run_out, False), fullsize.MODELS[family])
        else:  # the same prepared folder and latent cache; DoG only (its adapter-off guide is LoRA's own path)
            cfg.data, cfg.source, cfg.methods = str(prepared), [], ["dog"]
            cfg.train["data"] = {**cfg.train.get("data", {}), "cache_path": str(out / "full" / "finetune" /
                                                                                  "latents.safetensors")}
        tcfg = train_config(cfg, run_out, False)
        with stage(f"fine-tune {kind}", gpu, records,
                     full_run_scale=FULL_TRAIN_IMAGES / (tcfg.steps * tcfg.batch_size)) as rec:
            rec.info = stage_finetune(cfg, run_out, False)
        with stage(f"checkpoint round trip {kind}", gpu, records, count_flops=False) as rec:
            rec.info = _checkpoint_roundtrip(find_latest(run_out / "finetune"), family)
        with stage(f"sample {kind} (+ VAE decode)", gpu, records,
                     full_run_scale=FULL_SAMPLES * FULL_STEPS / (cfg.num_samples * size.sample_steps)) as rec:
            rec.info = stage_sample(cfg, run_out, dist, False)
        _rescale_decode(records[-1], len(cfg.methods) * cfg.num_samples, cfg.num_samples, gpu, out / "stages.jsonl")
        if lora:
            continue  # the extractors are those of the full fine-tune's evaluation
        n_images = len(cfg.methods) * cfg.num_samples + 4  # samples + the fake reference, per protocol
        with stage("evaluate", gpu, records,
                     full_run_scale=(len(cfg.methods) * FULL_SAMPLES + 10_000) / n_images) as rec:
            scores = score_samples(cfg, run_out, data_dir(cfg, run_out) / cfg.train_split, sample_dirs(cfg, run_out),
                                   device="cpu", progress=False)
            rec.info = {"records": len(scores)}
        rows += [{**r, "model": fullsize.MODELS[family]} for r in dry_rows(cfg, scores, tcfg, kind)]
    plan = None
    if size.probe:
        with stage("memory probes", gpu, records, count_flops=False) as rec:  # the counter defeats checkpointing
            plan = memory_plan.probe_family(weights, family)
            rec.info = {"probes": len(plan["measured"])}
    return {"weights": weights, "rows": rows, "memory": plan}


def dry_run(benchmark: str, out: str | Path, families: tuple[str, ...] = ("dit", "sit"),
            given: dict[str, str | None] | None = None, gpu: GpuAssumption | None = None,
            size: DryRunSize | None = None) -> dict[str, Any]:
    """Run the dry run of ``families`` into ``out``; writes ``dry_run.json`` and ``dry_run.md``; returns the report."""
    if benchmark != "food101":
        raise ValueError(f"--dry-run: the fake target is laid out as Food-101; run it as `dog reproduce food101 "
                         f"--dry-run` (got {benchmark!r}): the networks and stages are the same for every row")
    bad = [f for f in families if f not in fullsize.MODELS]
    if bad or not families:
        raise ValueError(f"--dry-run: model families {bad or families}; expected some of {sorted(fullsize.MODELS)}")
    out, gpu = Path(out).expanduser(), gpu or GpuAssumption()
    check_dry_out(out)
    pin_mmap_threshold()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(f"# {ROW_NOTE}\n\nEverything here was made by `dog reproduce --dry-run` from randomly "
                              "initialised networks and fake images: sizes, times and memory only, no result.\n")
    report: dict[str, Any] = {"note": ROW_NOTE, "gpu": gpu.describe(), "families": {}}
    for i, family in enumerate(families):
        records: list[StageRecord] = []
        # the probes once: SiT-XL/2 is DiT-XL/2's network (only the loss differs)
        fam_size = replace(size or DryRunSize(), probe=(size or DryRunSize()).probe and i == 0)
        report["families"][family] = {**run_family(out / family, family, dict(given or {}), gpu, records, fam_size),
                                      "stages": [r.to_dict() for r in records]}
        report["families"][family]["stage_table"] = stage_table(records, gpu)
        write_json(out / "dry_run.json", report)
    (out / "dry_run.md").write_text(render(report))
    return report


def render(report: dict[str, Any]) -> str:
    """The dry run's Markdown: per family, the stage table, the rows and the memory plan."""
    parts = [f"# Dry run, random weights (nothing here is a result)\n\nGPU projection: {report['gpu']}.\n"]
    for family, fam in report["families"].items():
        parts += [f"## {fullsize.MODELS[family]}\n", fam["stage_table"], rows_markdown(fam["rows"])]
        if fam.get("memory"):
            parts.append(memory_plan.plan_markdown(fam["memory"]))
    return "\n".join(parts)
