"""Quality per network evaluation (issue 22, item 2): DoG and CFG at w = 1.5 on the embedded benchmark against the
network evaluations per image (NFE) of DDPM, DDIM and the two best diffusers solvers.

The benchmark is `dog demo`'s (docs/demo.md): its fine-tune (classes 6-9, 50 images each, 1000 steps, run once
into ``--out``), its judge, its 400-image reference, its real floors, N = 100 per set, seed replicates 0, 1, 2
(the same seeds for every solver), its scorer (FID / KID on FID-Inception features, the judge's metrics,
marginal and intra-class) and its resolved rule. w = 1.5: the demo's w at which CFG's gain over unguided
resolves (the benchmark's regime reading); w = 3 is past the U-shape's bottom for both methods there.
NFE convention: _solver_nfe.py (a branch pair per evaluation; heun 2 steps - 1), checked against each set's record.

Stages: a pilot (seed replicate 0, DoG only, no Inception) ranks the candidate diffusers solvers by pixel RMSE to
DDIM 100 from the same noise at the smallest budgets and picks the best two distinct samplers (``--solvers``
overrides), and reports DDPM at 10 / 20 steps against DDPM 100; then the grid, scored and summarised: per set
the metrics, per (solver, NFE, method) mean ± std, each compared with DDPM at the most steps; the fewest NFE from
which each solver stays within that reference's spread, per metric; generation wall time per set. Every sample
set is cached under ``--out/samples/<solver>@<nfe>/<method>-...-<settings key>`` (the key covers the settings
and the weights' sha256), its scores beside it: a rerun resumes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/solver_quality.py     # pilot + grid + table + plot (--pilot-only)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domain_guidance.io.atomic import write_json
from domain_guidance.pipelines.demo import analysis
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.demo.report import COLUMNS, fmt
from domain_guidance.pipelines.demo.run import finetune, score_floors
from domain_guidance.pipelines.demo.scoring import Scorer
from domain_guidance.pipelines.demo.workbench import Workbench, seeds_of
from domain_guidance.pipelines.generate import GenerationSettings, balanced_labels, load_models, load_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _solver_nfe import branch_evaluations, choose_solvers, fewest_table, nfe_of, steps_for, within  # noqa: E402

W = 1.5
# name -> (sampler, options): the options exactly as `dog demo` / `dog sample` would pass them (settings key)
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm-solver++": ("dpm-solver++", {}), "dpm-solver++ order 3": ("dpm-solver++", {"order": 3}),
    "dpm-solver++ trailing": ("dpm-solver++", {"timestep_spacing": "trailing"}),
    "unipc": ("unipc", {}), "unipc order 3": ("unipc", {"order": 3}),
    "unipc trailing": ("unipc", {"timestep_spacing": "trailing"}),
    "deis": ("deis", {}), "euler": ("euler", {}), "heun": ("heun", {})}
BASELINES: dict[str, tuple[str, dict[str, Any]]] = {"ddpm": ("ddpm", {}), "ddim": ("ddim", {})}
PILOT_NFE = (6, 10)  # 6: a quarter of today's demo (DDIM 25 = 25 evaluations) or fewer
REFERENCE = ("ddpm", 100)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    """The demo's workbench (source, judge, reference, scorer) with its fine-tune, drawing and scoring sets."""

    def __init__(self, out: Path) -> None:
        # the animal benchmark (docs/demo.md): the demo's `animal` target where the demo has several targets
        target = {"target": "animal"} if "target" in {f.name for f in dataclasses.fields(DemoConfig)} else {}
        self.cfg = DemoConfig(out=str(out), progress=False, **target)
        if (self.cfg.target_classes, self.cfg.finetune_steps, self.cfg.images_per_class) != ([6, 7, 8, 9], 1000, 50):
            raise RuntimeError(f"expected the animal benchmark (classes 6-9, 1000 steps, 50 per class), got {self.cfg}")
        self.out, self.wb = out, Workbench.open(self.cfg, out)
        self.ft = finetune(self.cfg, self.wb.source["checkpoint"], out, 0.1)
        self.models = load_models(self.ft["checkpoint"], guide=self.wb.source["checkpoint"])
        self.labels = balanced_labels(self.cfg.samples, self.models.config.num_classes)

    def draw(self, solver: str, nfe: int, method: str, rep: int) -> dict[str, Any]:
        """One sample set (cached): ``solver``'s sampler with the most steps within ``nfe`` evaluations."""
        sampler, options = {**CANDIDATES, **BASELINES}[solver]
        steps = steps_for(sampler, nfe)
        s = GenerationSettings(method=method, scale=W, sampler=sampler, steps=str(steps), options=options,
                               seeds=seeds_of(rep, self.cfg.samples), labels=self.labels)
        folder = self.out / "samples" / f"{solver.replace(' ', '-')}@{nfe}" / f"{method}-w{W:g}-seed{rep}"
        meta = {"finetune": f"{solver}@{nfe}", "solver": solver, "nfe": nfe, "seed": rep, "steps": steps}
        r = self.wb.draw(s, self.models, folder, {**meta, "method": method, "w": W, "interval": None})
        rec = json.loads((Path(r["samples"]).parent / "settings.json").read_text())
        calls = rec["network_evaluations_per_image"]
        if calls["total"] != branch_evaluations(method, sampler, steps):  # CFG: both branches are the fine-tune's
            raise RuntimeError(f"{solver}@{nfe}: recorded evaluations {calls}, expected {nfe_of(sampler, steps)} pairs")
        # the generator's own wall time, kept from the call that drew the whole set (a rerun rewrites settings.json)
        timing = Path(r["samples"]).parent / "timing.json"
        if rec.get("generated_now") == rec["num_samples"] and not timing.is_file():
            write_json(timing, {"seconds": rec["seconds"]})
        r["gen_seconds"] = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
        return r

    def score(self, r: dict[str, Any], scorer: Scorer | None = None) -> dict[str, Any]:
        """``r`` with its metrics (cached beside the samples, keyed by the judge, source and metric list)."""
        scorer = scorer or self.wb.scorer
        name = f"scores{'' if scorer.inception is not None else '-judge'}.json"
        key = {"samples": r["samples"], "fid": scorer.inception is not None}
        saved = self.wb.cached(Path(r["samples"]).parent / name, key, lambda: scorer(*load_samples(r["samples"])))
        return {**r, **{k: v for k, v in saved.items() if k != "config_key"}}


def _rmse(a: str, b: str) -> float:
    """Pixel RMSE in [0, 1] units between two sample sets of the same seeds."""
    x, y = (load_samples(p)[0].astype(np.float64) / 255 for p in (a, b))
    return float(np.sqrt(np.mean((x - y) ** 2)))


def pilot(b: Bench) -> dict[str, Any]:
    """Replicate 0, DoG: each candidate at PILOT_NFE vs DDIM 100 (pixel RMSE, judge metrics); DDPM 10 / 20 vs 100."""
    judge_only = dataclasses.replace(b.wb.scorer, inception=None, ref_inception=None, cache=None)
    ode = b.draw("ddim", 100, "dog", 0)
    rows = {}
    for name in CANDIDATES:
        for nfe in PILOT_NFE:
            r = b.score(b.draw(name, nfe, "dog", 0), judge_only)
            rows[f"{name}@{nfe}"] = {"solver": name, "nfe": nfe, "steps": r["steps"],
                                     "rmse_vs_ddim100": _rmse(r["samples"], ode["samples"]),
                                     **{m: r[m] for m in ("fd_classifier", "intra_fd_classifier", "class_match")}}
    for nfe in (10, 20, 50, 100):
        r = b.score(b.draw("ddpm", nfe, "dog", 0), judge_only)
        rows[f"ddpm@{nfe}"] = {"solver": "ddpm", "nfe": nfe, "steps": nfe, "rmse_vs_ddim100": None,
                               **{m: r[m] for m in ("fd_classifier", "intra_fd_classifier", "class_match")}}
    errors = {n: {nfe: rows[f"{n}@{nfe}"]["rmse_vs_ddim100"] for nfe in PILOT_NFE} for n in CANDIDATES}
    chosen = choose_solvers(errors, {n: CANDIDATES[n][0] for n in CANDIDATES})
    write_json(b.out / "pilot.json", {"rows": rows, "chosen": chosen})
    return {"rows": rows, "chosen": chosen}


def pilot_table(p: dict[str, Any]) -> str:
    lines = ["| solver | NFE (steps) | pixel RMSE vs DDIM 100 | FD (judge) | intra-FD (judge) | class match |",
             "|---|---|---|---|---|---|"]
    for r in p["rows"].values():
        rmse = "n/a" if r["rmse_vs_ddim100"] is None else f"{r['rmse_vs_ddim100']:.4f}"
        lines.append(f"| {r['solver']} | {r['nfe']} ({r['steps']}) | {rmse} | {r['fd_classifier']:.1f} | "
                     f"{r['intra_fd_classifier']:.1f} | {r['class_match']:.3f} |")
    return "\n".join(lines) + f"\n\nchosen: {', '.join(p['chosen'])}"


def grid(solvers: list[str], ddpm_nfe: list[int], nfe: list[int], extra_ddim: list[int]) -> list[tuple[str, int]]:
    """(solver, NFE) cells: DDPM at ``ddpm_nfe``, DDIM at ``nfe`` + ``extra_ddim``, the chosen solvers at ``nfe``."""
    cells = [("ddpm", n) for n in ddpm_nfe] + [("ddim", n) for n in sorted(set(nfe) | set(extra_ddim))]
    return cells + [(s, n) for s in solvers for n in nfe]


def drawing_order(cells: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The reference first, then by NFE (the goal's budgets first), the diffusers solvers before DDIM / DDPM."""
    return sorted(cells, key=lambda c: (c != REFERENCE, c[1], c[0] in BASELINES))


def run_grid(b: Bench, cells: list[tuple[str, int]], methods: list[str], save: Any) -> dict[str, Any]:
    """Draw and score every set of ``methods`` (in order) x ``cells`` (``drawing_order``) x seed replicates; after
    each cell ``save(results so far)`` (the summary with the real floors)."""
    runs: list[dict[str, Any]] = []
    floors = None
    for k, method in enumerate(methods):
        for solver, nfe in drawing_order(cells):
            for rep in b.cfg.seeds:
                r = b.score(b.draw(solver, nfe, method, rep))
                _log(f"{solver}@{nfe} {method} seed{rep}: FID {r['fid']:.2f} intra-FD {r['intra_fd_classifier']:.1f}")
                runs.append(r)
            floors = floors or score_floors(b.cfg, b.out, runs, b.wb.scorer, b.wb.ref)
            res = {"runs": runs, "floors": floors, "summary": analysis.summarize(runs + floors),
                   "methods": methods[:k + 1]}
            save(res)
    return res


def measured_metrics(summary: list[dict[str, Any]]) -> list[str]:
    """The demo's compared metrics that every summary row has (the animal benchmark has no exact domain rate)."""
    return [m for m in analysis.METRICS if all(m in r.get("values", {}) for r in summary)]


def tables(res: dict[str, Any], cells: list[tuple[str, int]], against: tuple[str, int] = REFERENCE) -> str:
    """Markdown: per method the metrics of every cell (``*``: resolved against cell ``against``, DDPM at the most
    steps by default), then the fewest NFE within that spread per solver and metric, then generation seconds."""
    summary, metrics, methods = res["summary"], measured_metrics(res["summary"]), res["methods"]
    ref_name = f"{against[0]}@{against[1]}"
    real = analysis.find(summary, None, "real")
    out = []
    for method in methods:
        ref = analysis.find(summary, ref_name, method, W)
        out += [f"\n**{'DoG' if method == 'dog' else 'CFG'}** w = {W:g} (`*`: resolved against {ref_name})\n",
                "| solver | NFE | " + " | ".join(COLUMNS[m][0] for m in metrics) + " | within |",
                "|---|---|" + "---|" * (len(metrics) + 1)]
        out.append("| real (floor) | | " + " | ".join(fmt(real, m) for m in metrics) + " | |")
        for solver, nfe in cells:
            row = analysis.find(summary, f"{solver}@{nfe}", method, W)
            if row is None or ref is None:
                continue  # not measured (yet)
            ok = [within(row["values"][m], ref["values"][m]) for m in metrics]
            out.append(f"| {solver} | {nfe} | " + " | ".join(fmt(row, m) + ("" if o else "*") for m, o in
                                                            zip(metrics, ok)) + f" | {sum(ok)}/{len(ok)} |")
    out += [f"\nFewest NFE from which each solver stays within the spread of {ref_name} (— : not within at its "
            "largest NFE measured)\n",
            "| solver | method | " + " | ".join(COLUMNS[m][0] for m in metrics) + " | all | largest NFE measured |",
            "|---|---|" + "---|" * (len(metrics) + 2)]
    for solver in dict.fromkeys(s for s, _ in cells):
        for method in methods:
            ref = analysis.find(summary, ref_name, method, W)
            measured = [n for s, n in cells if s == solver and analysis.find(summary, f"{s}@{n}", method, W)]
            if ref is None or not measured:
                continue
            few = fewest_table(summary, ref, solver, method, metrics)
            all_ = None if any(v is None for v in few.values()) else max(few.values())
            cells_md = " | ".join("—" if few[m] is None else str(few[m]) for m in metrics)
            out.append(f"| {solver} | {method} | {cells_md} | {all_ or '—'} | {max(measured)} |")
    out += ["\nGeneration wall time per set of 100 (s, mean over the sets drawn in one go; 1 torch thread)\n",
            "| solver | NFE | DoG | CFG |", "|---|---|---|---|"]
    for solver, nfe in cells:
        sets = [[r for r in res["runs"] if r["finetune"] == f"{solver}@{nfe}" and r["method"] == m]
                for m in ("dog", "cfg")]
        secs = [[r["gen_seconds"] for r in rs if r["gen_seconds"] is not None] for rs in sets]  # n/a: not drawn now
        if any(sets):
            out.append(f"| {solver} | {nfe} | " + " | ".join(f"{np.mean(x):.1f}" if x else "n/a" for x in secs) + " |")
    return "\n".join(out)


def plot(res: dict[str, Any], cells: list[tuple[str, int]], path: Path) -> Path:
    """One panel per metric: mean ± std against NFE (log), a line per solver (DoG solid, CFG dashed), DDPM at the
    most steps as a band (DoG orange, CFG blue) and the real floor dotted."""
    from domain_guidance.pipelines.demo.heatmap import plt_figure, save_figure

    summary, metrics = res["summary"], measured_metrics(res["summary"])
    rows = -(-len(metrics) // 5)
    fig, axes = plt_figure(rows, 5, (22, 4 * rows))
    real = analysis.find(summary, None, "real")
    for ax, m in zip(axes.flat, metrics):
        scale = COLUMNS[m][2]
        for i, solver in enumerate(dict.fromkeys(s for s, _ in cells)):
            for method, style in [(m, st) for m, st in (("dog", "-"), ("cfg", "--")) if m in res["methods"]]:
                rows = [(n, analysis.find(summary, f"{solver}@{n}", method, W)) for s, n in cells if s == solver]
                rows = [(n, r) for n, r in rows if r is not None]
                xs = [n for n, _ in rows]
                ys, es = (np.array([r[k] for _, r in rows]) * scale for k in (m, f"{m}_std"))
                ax.errorbar(xs, ys, yerr=es, fmt=style + "o", ms=3, color=f"C{i}", capsize=2,
                            label=f"{solver} {method}")
        for method, color in [(m, c) for m, c in (("dog", "tab:orange"), ("cfg", "tab:blue")) if m in res["methods"]]:
            ref = analysis.find(summary, f"{REFERENCE[0]}@{REFERENCE[1]}", method, W)
            if ref is None:
                continue
            ax.axhspan((ref[m] - ref[f"{m}_std"]) * scale, (ref[m] + ref[f"{m}_std"]) * scale, color=color, alpha=0.15)
        ax.axhline(real[m] * scale, color="k", ls=":", lw=1)
        ax.set(xscale="log", xlabel="network evaluations per image", title=COLUMNS[m][0])
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"DoG / CFG at w = {W:g} against NFE; bands: DDPM {REFERENCE[1]} mean ± std; dotted: real floor")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/solver-quality")
    p.add_argument("--solvers", default=None, help="comma-separated candidates [default: the pilot's two]")
    p.add_argument("--nfe", default="6,10,20,50", help="NFE of DDIM and the solvers [default: 6,10,20,50]")
    p.add_argument("--ddim-extra", default="25,100", help="more DDIM NFE (25: today's demo) [default: 25,100]")
    p.add_argument("--ddpm-nfe", default="50,100", help="DDPM NFE; the largest is the reference [default: 50,100]")
    p.add_argument("--methods", default="dog,cfg", help="in this order [default: dog,cfg]")
    p.add_argument("--pilot-only", action="store_true")
    p.add_argument("--against", default=None, help="SOLVER@NFE: only print the tables of --out's results.json with "
                   "that cell as the reference (e.g. ddim@25, today's demo)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    if max(ints(args.ddpm_nfe)) != REFERENCE[1]:
        raise SystemExit(f"--ddpm-nfe must include the reference DDPM {REFERENCE[1]}, got {args.ddpm_nfe}")
    out = Path(args.out)
    if args.against:  # no sampling: the cached results against another reference
        res, (solver, nfe) = json.loads((out / "results.json").read_text()), args.against.split("@")
        print(tables(res, [tuple(c) for c in res["cells"]], (solver, int(nfe))))
        return 0
    t0, b = time.perf_counter(), Bench(out)
    pil = pilot(b)
    _log("pilot:\n" + pilot_table(pil))
    if args.pilot_only:
        return 0
    solvers = [s.strip() for s in args.solvers.split(",")] if args.solvers else pil["chosen"]
    methods = [m for m in args.methods.split(",") if m]
    if set(solvers) - set(CANDIDATES) or not methods or set(methods) - {"dog", "cfg"}:
        raise SystemExit(f"--solvers {solvers} / --methods {methods}: expected some of {list(CANDIDATES)} / dog, cfg")
    cells = grid(solvers, ints(args.ddpm_nfe), ints(args.nfe), ints(args.ddim_extra))

    def save(res: dict[str, Any]) -> None:
        write_json(out / "results.json", {**res, "cells": cells, "pilot": pil, "finetune": b.ft,
                                          "seconds": round(time.perf_counter() - t0, 1)})
        (out / "table.md").write_text(pilot_table(pil) + "\n" + tables(res, cells) + "\n")

    res = run_grid(b, cells, methods, save)
    _log(f"table {out / 'table.md'}; plot {plot(res, cells, out / 'quality-per-nfe.png')}\n{tables(res, cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
