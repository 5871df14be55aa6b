"""``dog demo --study``: when does DoG help? DoG vs CFG over coverage x fine-tune length x images per class.

The coverage axis is the target: ``covered`` (inside the source's domain) and ``outside`` (shapes the source never
saw) for the glyph benchmark; each target gets its own folder ``OUT/<target>/`` (judge, reference, cells) when the
study has several, and the targets share one source model.

Each cell of the map is one demo run at that fine-tune length and target-set size (the base
config's everything else): fine-tune, unguided / CFG / DoG at every w and seed replicate, the real
floor at the same N, the comparison cells with the one resolved rule (``analysis.RULE``) and the
regime checks. A cell is saved as ``cells/<name>/cell.json`` when done; a rerun with the same
settings reads it back, and an unfinished cell resumes its own stages (fine-tune checkpoints,
sample shards, feature caches). The paper's ablations (``ablations.py``) run on the base cell.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from ...io.atomic import write_json
from ..generate import GenerationSettings, balanced_labels, load_models
from . import analysis
from .ablations import nine_grid, steps_ablation, uncond_guide_ablation
from .config import DemoConfig, retarget
from .run import assemble, finetune, score_floors, settings_grid
from .study_config import ABLATIONS, StudyConfig, study_base
from .study_report import write_study_report
from .workbench import Workbench, seeds_of, set_tag

FT = "ld0.1"  # the study's fine-tunes: label dropout 0.1, as the demo's


def run_cell(wb: Workbench, cfg: DemoConfig) -> dict[str, Any]:
    """One map cell: fine-tune, every grid setting at every seed replicate, the floors, comparisons, regime checks.

    Returns the record of ``cfg.out/cell.json`` (read back when it was made with this config).
    """
    out = Path(cfg.out)

    def compute() -> dict[str, Any]:
        t0 = time.perf_counter()
        ft = finetune(cfg, wb.source["checkpoint"], out, 0.1)
        models = load_models(ft["checkpoint"], guide=wb.source["checkpoint"])
        labels = balanced_labels(cfg.samples, models.config.num_classes)
        records = []
        for rep in cfg.seeds:
            for entry in settings_grid(cfg):
                method, w, interval = entry["method"], entry["w"], entry["interval"]
                settings = GenerationSettings(method=method, scale=w, interval=interval, sampler=cfg.sampler,
                                              steps=str(cfg.steps), seeds=seeds_of(rep, cfg.samples), labels=labels)
                records.append(wb.draw(settings, models, out / "samples" / set_tag(method, w, interval) / f"seed{rep}",
                                       {"finetune": FT, "method": method, "w": w, "interval": interval, "seed": rep}))
        runs = wb.score(records)
        floors = score_floors(cfg, out, runs, wb.scorer, wb.ref)
        return {"target": cfg.target, "finetune_steps": cfg.finetune_steps, "images_per_class": cfg.images_per_class,
                "finetune": ft,
                "runs": runs, "floors": floors, **assemble(cfg, runs, floors, {FT: ft}),
                "seconds": round(time.perf_counter() - t0, 2)}

    return wb.cached(out / "cell.json", cfg.to_dict(), compute)


def map_entries(cells: list[dict[str, Any]], ws: list[float], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One entry per (cell, w, metric): DoG and CFG means, the relative change of DoG against CFG in percent
    (100 (DoG - CFG) / |CFG|), the resolved flag and the better method (None unless resolved), the real floor."""
    out = []
    for cell in cells:
        summary = cell["summary"]
        real = analysis.find(summary, FT, "real")
        for w in ws:
            dog, cfg = analysis.find(summary, FT, "dog", w), analysis.find(summary, FT, "cfg", w)
            if dog is None or cfg is None:
                continue
            for m in metrics or list(analysis.METRICS):
                c = analysis.find_comparison(cell["comparisons"], dog, cfg, m)
                if c is None:
                    continue
                out.append({"target": cell.get("target"),
                            "finetune_steps": cell["finetune_steps"], "images_per_class": cell["images_per_class"],
                            "w": w, "metric": m, "dog": c["mean_a"], "cfg": c["mean_b"], "diff": c["diff"],
                            "pooled_std": c["pooled_std"],
                            "rel_change": None if c["mean_b"] == 0 else 100.0 * c["diff"] / abs(c["mean_b"]),
                            "resolved": c["resolved"], "better": {"a": "dog", "b": "cfg"}.get(c["better"]),
                            "floor": None if real is None or m not in real else real[m],
                            "floor_std": None if real is None or m not in real else real[f"{m}_std"]})
    return out


def target_workbenches(study: StudyConfig, out: Path) -> dict[str, Workbench]:
    """One workbench per target of the coverage axis (the base target's first: the ablations run on it).

    With one target the study's folder is its workbench's (the layout of a single-target study); with several,
    ``out/<target>``. Targets with the same source preset share the first one's source checkpoint: a source
    pre-trained here (``--pretrain``) is trained once.
    """
    names = list(dict.fromkeys([study.base.target, *study.targets]))
    benches: dict[str, Workbench] = {}
    sources: dict[str, str] = {}
    for name in names:
        cfg = retarget(study.base, name)
        if cfg.source_preset in sources:
            cfg = dataclasses.replace(cfg, source=sources[cfg.source_preset], pretrain=False)
        cfg.out = str(out if len(names) == 1 else out / name)
        benches[name] = Workbench.open(cfg, Path(cfg.out))
        sources.setdefault(cfg.source_preset, benches[name].source["checkpoint"])
    return benches


def run_study(study: StudyConfig) -> dict[str, Any]:
    """Run the map and the named ablations; writes ``study.json`` and ``report.md`` to ``study.base.out``."""
    study.validate()
    t0 = time.perf_counter()
    out = Path(study.base.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study_config.json", study.to_dict())
    benches = target_workbenches(study, out)
    wb = benches[study.base.target]
    results: dict[str, Any] = {"config": study.to_dict(), "source": wb.source, "classifier": wb.clf_info,
                               "targets": {t: {"source": b.source, "classifier": b.clf_info, "out": str(b.out)}
                                           for t, b in benches.items()},
                               "resolve_rule": analysis.RULE, "cells": [], "map": [], "ablations": {}}
    if study.map:
        for target in study.targets:
            tb = benches[target]
            for steps in study.finetune_steps:
                for ipc in study.images_per_class:
                    cfg = tb.cell_config(steps, ipc)
                    print(f"[study] cell: target {target}, {steps} fine-tune steps, {ipc} images per class "
                          f"({cfg.out})", flush=True)
                    results["cells"].append(run_cell(tb, cfg))
        results["map"] = map_entries(results["cells"], study.base.w)
    base_cell = wb.cell_config(wb.base.finetune_steps, wb.base.images_per_class)
    runners = {"steps": steps_ablation, "uncond-guide": uncond_guide_ablation, "nine-grid": nine_grid}
    for name in study.ablations:
        print(f"[study] ablation: {name}", flush=True)
        results["ablations"][name] = runners[name](wb, study, base_cell)
    # this invocation's wall time; a finished cell keeps the seconds it took when it was computed
    results["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "study.json", results)
    write_study_report(results, out)
    print(f"[study] report: {out / 'report.md'}", flush=True)
    return results


__all__ = ["ABLATIONS", "FT", "StudyConfig", "map_entries", "run_cell", "run_study", "study_base"]
