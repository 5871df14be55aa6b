"""Markdown report of a demo run: protocol, regime checks, per-w tables with the real floor and resolved
flags, a verdict from resolved differences only, metric-vs-w plots, sample grids.

Every number is read from the results dict that ``run_demo`` produced (also saved as results.json);
the comparisons and regime checks come from ``analysis`` (the one "resolved" rule).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...io.atomic import atomic_path
from ...io.images import save_grid
from ..generate import load_samples
from . import analysis
from .analysis import find, find_comparison
from .floors import load_real
from .report_format import COLUMNS, NAMES, TABLES, cell, fmt, label, metrics_of, rel_change, short, value
from .report_protocol import kid_detail, protocol, title as report_title

__all__ = ["COLUMNS", "NAMES", "TABLES", "cell", "fmt", "label", "metrics_of", "rel_change", "short", "value",
           "write_report"]

def rows_at(summary: list[dict], ft: str, w: float) -> list[dict[str, Any]]:
    """The rows of one w table: real floor, unguided, CFG, DoG, DoG with interval (those present)."""
    rows = [find(summary, ft, "real"), find(summary, ft, "unguided"), find(summary, ft, "cfg", w),
            find(summary, ft, "dog", w)]
    rows += [r for r in summary if r["finetune"] == ft and r["method"] == "dog" and r["w"] == w and r.get("interval")]
    return [r for r in rows if r is not None]


def table(summary: list[dict], cells: list[dict], ft: str, w: float) -> list[str]:
    """Markdown lines: per metric family (``TABLES``), the floor and the methods x metrics at one w, then
    the comparison rows with resolved flags."""
    lines: list[str] = []
    for title, family in TABLES:
        metrics = [m for m in metrics_of(summary) if m in family]
        if metrics:
            lines += [f"{title}:", ""] + _family_table(summary, cells, ft, w, metrics) + [""]
    return lines[:-1]


def _family_table(summary: list[dict], cells: list[dict], ft: str, w: float, metrics: list[str]) -> list[str]:
    lines = ["| Setting | " + " | ".join(COLUMNS[m][0] for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    rows = rows_at(summary, ft, w)
    for row in rows:
        lines.append(f"| {label(row)} | " + " | ".join(fmt(row, m) for m in metrics) + " |")
    by = {short(r): r for r in rows}
    pairs = [("DoG", "CFG"), ("CFG", "Unguided"), ("DoG", "Unguided"), ("DoG-int", "CFG"), ("DoG-int", "DoG")]
    for a, b in pairs:
        if a in by and b in by:
            lines.append(f"| {a} vs {b} | " + " | ".join(cell(find_comparison(cells, by[a], by[b], m))
                                                        for m in metrics) + " |")
    return lines


def verdict(summary: list[dict], cells: list[dict], ft: str, ws: list[float]) -> list[str]:
    """Per w: DoG (and DoG with interval) vs CFG, stated only where the difference is resolved."""
    lines = []
    for w in ws:
        cfg = find(summary, ft, "cfg", w)
        dogs = [r for r in summary if r["finetune"] == ft and r["method"] == "dog" and r["w"] == w]
        if cfg is None:
            continue
        for dog in dogs:
            name = label(dog)
            unresolved = []
            for m in metrics_of(summary):
                c = find_comparison(cells, dog, cfg, m)
                if c is None:
                    continue
                if not c["resolved"]:
                    unresolved.append(m)
                    continue
                (winner, won), (loser, lost) = ((name, dog), ("CFG", cfg)) if c["better"] == "a" else \
                    (("CFG", cfg), (name, dog))
                lines.append(f"- w={w:g}: {winner} beats {loser} on {m} (resolved: {winner} {fmt(won, m)} vs "
                             f"{loser} {fmt(lost, m)}).")
            if unresolved:
                lines.append(f"- w={w:g}: no resolved difference between {name} and CFG on {', '.join(unresolved)}.")
    return lines


def regime(diag: dict[str, Any], summary: list[dict], ft: str) -> list[str]:
    """The regime checks: did the fine-tune learn its classes; are samples worse than real; does CFG help."""
    lines = []
    lc = diag.get("learned_classes")
    if lc is not None:
        ceiling = "n/a" if lc["real_ceiling"] is None else f"{lc['real_ceiling']:.3f}"
        frac = "n/a" if lc["fraction_of_ceiling"] is None else f"{100 * lc['fraction_of_ceiling']:.0f}%"
        lines += [f"- (a) The fine-tune learned its classes: unguided class match "
                  f"{lc['unguided_class_match']:.3f} ± {lc['unguided_class_match_std']:.3f} vs chance "
                  f"{lc['chance']:.3f} (1/K) and the real ceiling {ceiling}: above chance "
                  f"{'(resolved)' if lc['above_chance'] else 'NOT resolved'}; it covers {frac} of the way from "
                  "chance to the ceiling.", ""]
    worse, improves = diag.get("worse_than_floor", {}), diag.get("cfg_improves", {})
    if worse or improves:
        lines += ["| metric | (b) Unguided | Real (floor) | samples worse than real? | (c) CFG at best w | "
                  "CFG better than unguided? |", "|---|---|---|---|---|---|"]
        unguided, real = find(summary, ft, "unguided"), find(summary, ft, "real")
        for m in metrics_of(summary):
            b, c = worse.get(m), improves.get(m)
            wb = "n/a" if b is None else ("yes (resolved)" if b["worse"] else "no resolved gap")
            best = find(summary, ft, "cfg", c["w"]) if c is not None else None
            cb = "n/a" if c is None else ("yes (resolved)" if c["improves"] else "no (not resolved or worse)")
            at_best = "n/a" if best is None else f"w={best['w']:g}: " + fmt(best, m)
            lines.append(f"| {m} | {fmt(unguided, m) if unguided else 'n/a'} | {fmt(real, m) if real else 'n/a'} | "
                         f"{wb} | {at_best} | {cb} |")
        lines += ["", "(b) A metric on which samples are not measurably worse than real images leaves guidance "
                  "nothing to improve. (c) The best w is picked on the same numbers, an optimistic choice."]
        lines += ["", regime_reading(improves)]
    return lines


def regime_reading(improves: dict[str, Any]) -> str:
    """One sentence: on which metric family (marginal / per class) CFG measurably improves on unguided."""
    quality = [m for m in improves if analysis.METRICS[m]]  # lower-is-better metrics: quality, not rates
    marginal = [m for m in quality if not m.startswith("intra_") and improves[m]["improves"]]
    per_class = [m for m in quality if m.startswith("intra_") and improves[m]["improves"]]
    if marginal:
        return (f"Regime: CFG measurably improves marginal quality ({', '.join(marginal)}), as in the paper's setting"
                + (f", and per-class quality ({', '.join(per_class)})." if per_class else "."))
    if per_class:
        return (f"Regime: CFG measurably improves per-class quality only ({', '.join(per_class)}), no marginal quality "
                "metric: in the paper's regime on class-conditional quality, not on the marginal FID the paper reports; "
                "read DoG vs CFG on the per-class metrics.")
    return ("Regime: CFG improves no quality metric measurably: not the paper's regime; DoG vs CFG here compares "
            "what each does at equal w, not which is the better guidance.")


def plot(summary: list[dict], ft: str, out: Path) -> Path:
    """One panel per metric: metric against w for CFG, DoG (and DoG with interval); unguided dashed, floor dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics_of(summary)
    cols = min(3, len(metrics))
    rows_n = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.0 * rows_n), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, metrics):
        scale = COLUMNS[m][2]
        for method, with_interval, name in (("cfg", False, "CFG"), ("dog", False, "DoG"), ("dog", True, "DoG-int")):
            rows = sorted((r for r in summary if r["finetune"] == ft and r["method"] == method and m in r
                           and bool(r.get("interval")) == with_interval), key=lambda r: r["w"])
            if rows:
                ax.errorbar([r["w"] for r in rows], [r[m] * scale for r in rows],
                            yerr=[r[f"{m}_std"] * scale for r in rows], marker="o", capsize=3, label=name)
        for method, style in (("unguided", "--"), ("real", ":")):
            row = find(summary, ft, method)
            if row is not None and m in row:
                ax.axhline(row[m] * scale, color="gray", linestyle=style, label=NAMES[method])
        ax.set_xlabel("guidance weight w")
        ax.set_title(COLUMNS[m][0], fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"metrics-vs-w-{ft}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def grids(results: dict[str, Any], ft: str, out: Path, per_row: int = 16) -> Path:
    """One mosaic: real images of the first floor set, then a row per setting, first seed replicate, same seeds."""
    rep = results["config"]["seeds"][0]
    rows = []
    for r in results.get("floors", [])[:1]:
        images, labels = load_real(r["images"])
        if labels is not None:  # column i shows a real image of the class the samples in column i ask for (i mod K)
            k = int(labels.max()) + 1
            pools = {c: list(np.flatnonzero(labels == c)) for c in range(k)}
            order = [pools[i % k].pop(0) for i in range(per_row) if pools[i % k]]
            images = images[order]
        rows.append(torch.from_numpy(images[:per_row]).permute(0, 3, 1, 2))  # (n, C, H, W)
    for r in results["runs"]:
        if r["finetune"] == ft and r["seed"] == rep:
            images, _ = load_samples(r["samples"])
            rows.append(torch.from_numpy(images[:per_row]).permute(0, 3, 1, 2))  # (n, C, H, W)
    n = min(len(x) for x in rows)
    path = out / f"samples-{ft}.png"
    save_grid(torch.cat([x[:n] for x in rows]), path, nrow=n, upscale=max(1, 64 // rows[0].shape[-1]))
    return path


def write_report(results: dict[str, Any], out: str | Path) -> Path:
    """Write ``out/report.md`` (with its PNGs) from a ``run_demo`` results dict."""
    out = Path(out)
    cfg, summary, cells = results["config"], results["summary"], results.get("comparisons", [])
    lines = [f"# Domain Guidance demo: {report_title(results)}", "",
             "All numbers below were produced by this run (`results.json` next to this file).", ""]
    lines += protocol(results)
    for ft, info in results["finetunes"].items():
        lines += [f"## Fine-tune with label dropout {info['label_dropout']:g} (`{ft}`)", "", "### Regime checks", ""]
        lines += regime(results.get("diagnostics", {}).get(ft, {}), summary, ft) + [""]
        for w in cfg["w"]:
            lines += [f"### w = {w:g}", ""] + table(summary, cells, ft, float(w)) + [""]
        lines += kid_detail(summary, ft)
        lines += ["### Verdict (resolved differences only)", ""]
        lines += verdict(summary, cells, ft, [float(w) for w in cfg["w"]]) or [
            "- No CFG available for this fine-tune (no null label)."]
        lines += ["", f"![metrics vs w]({plot(summary, ft, out).name})", "",
                  f"Samples (rows: real target images, unguided, then per w in {cfg['w']}: CFG, DoG"
                  + (", DoG with interval" if cfg.get("dog_interval") else "") + "; same seeds in every row):", "",
                  f"![samples]({grids(results, ft, out).name})", ""]
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
