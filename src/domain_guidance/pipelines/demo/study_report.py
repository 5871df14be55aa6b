"""Markdown report of ``dog demo --study``: the DoG-vs-CFG heat maps with their tables, each cell's regime
checks, and the ablations. Every number is read from the study's results (also saved as study.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...io.atomic import atomic_path
from . import analysis
from .domains import get_target
from .heatmap import LABELS, cell_text, draw_map
from .report import COLUMNS, NAMES, fmt, rel_change


def _map_section(results: dict[str, Any], out: Path) -> list[str]:
    study = results["config"]
    lengths, ipcs = study["finetune_steps"], study["images_per_class"]
    targets = list(dict.fromkeys(e.get("target") for e in results["map"])) or [None]
    lines = ["## When does DoG help? DoG vs CFG over coverage x fine-tune length x images per class", "",
             "Each cell is one demo run (fine-tune, then unguided / CFG / DoG at every seed replicate, scored with "
             "the real floor at the same N). Cell value: the relative change of DoG against CFG, "
             "100 (DoG - CFG) / |CFG| (for ↓ metrics negative means DoG better, for ↑ metrics positive), whether "
             f"the difference is resolved ({results['resolve_rule']}), and the real floor of that cell.", ""]
    if len(targets) > 1:
        lines += ["The coverage axis: " + "; ".join(f"`{t}` = {get_target(t).description}" for t in targets) + ".",
                  "", _coverage_summary(results["map"], targets), ""]
    for target in targets:
        for w in study["base"]["w"]:
            entries = [e for e in results["map"] if e["w"] == w and e.get("target") == target]
            if not entries:
                continue
            name = f"study-map-w{w:g}" + (f"-{target}" if len(targets) > 1 else "") + ".png"
            png = draw_map(entries, w, lengths, ipcs, out / name)
            head = f"### w = {w:g}" + (f", target {target}" if len(targets) > 1 else "")
            lines += [head, "", f"![DoG vs CFG map at w={w:g}]({png.name})", ""]
            lines += _metric_tables(entries, lengths, ipcs)
    lines += ["### Regime checks per cell", "",
              "| target | steps | images/class | unguided class match (chance) | fraction of ceiling | "
              "worse than floor on | "
              "CFG improves on (best w) | in the paper's regime | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for cell in results["cells"]:
        d = next(iter(cell["diagnostics"].values()))
        lc = d.get("learned_classes", {})
        match = "n/a" if not lc else f"{lc['unguided_class_match']:.3f} ({lc['chance']:.2f})"
        frac = "n/a" if lc.get("fraction_of_ceiling") is None else f"{lc['fraction_of_ceiling']:.2f}"
        worse = ", ".join(m for m, c in d.get("worse_than_floor", {}).items() if c["worse"]) or "none"
        better = ", ".join(m for m, c in d.get("cfg_improves", {}).items() if c["improves"]) or "none"
        lines.append(f"| {cell.get('target', 'n/a')} | {cell['finetune_steps']} | {cell['images_per_class']} | "
                     f"{match} | "
                     f"{frac} | {worse} | "
                     f"{better} | {in_regime(d)} | {cell.get('seconds', 0):.0f} |")
    return lines + ["", "Regime (fixed before any DoG comparison): (a) unguided class match resolved above chance, "
                        "(b) unguided resolved worse than the real floor on a quality metric (FID, KID, FD or KID in "
                        "the judge's features), (c) CFG at its best w resolved better than unguided on a quality "
                        "metric (an optimistic pick: w chosen on the same numbers).", ""]


def _metric_tables(entries: list[dict[str, Any]], lengths: list[int], ipcs: list[int]) -> list[str]:
    """Per metric: the map as a table (rows: fine-tune steps; columns: images per class) and its resolved count."""
    lines: list[str] = []
    for m in analysis.METRICS:
        grid = {(e["finetune_steps"], e["images_per_class"]): e for e in entries if e["metric"] == m}
        if not grid:
            continue
        lines += [f"**{COLUMNS[m][0]}** (rows: fine-tune steps; columns: images per class)", "",
                  "| steps | " + " | ".join(str(n) for n in ipcs) + " |", "|---|" + "---|" * len(ipcs)]
        for s in lengths:
            cells = [cell_text(grid.get((s, n))).replace("\n", "; ") for n in ipcs]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        won = [e for e in grid.values() if e["better"] == "dog"]
        lost = [e for e in grid.values() if e["better"] == "cfg"]
        lines += ["", f"Resolved: DoG better in {len(won)}, CFG better in {len(lost)}, not resolved in "
                      f"{len(grid) - len(won) - len(lost)} of {len(grid)} cells. " + _by_size(grid, ipcs), ""]
    return lines


def _coverage_summary(entries: list[dict[str, Any]], targets: list[str]) -> str:
    """One line per target: over all its cells, w and metrics, how many DoG-vs-CFG differences are resolved
    each way (the map's answer to "does DoG help inside the source's domain, and outside?")."""
    parts = []
    for t in targets:
        mine = [e for e in entries if e.get("target") == t]
        won, lost = sum(e["better"] == "dog" for e in mine), sum(e["better"] == "cfg" for e in mine)
        parts.append(f"`{t}`: DoG resolved better in {won}, CFG resolved better in {lost}, not resolved in "
                     f"{len(mine) - won - lost} of {len(mine)} (cell, w, metric) comparisons")
    return "By target: " + "; ".join(parts) + "."


def _by_size(grid: dict[tuple[int, int], dict[str, Any]], ipcs: list[int]) -> str:
    """Per target-set size: the mean relative change over fine-tune lengths and the resolved cells' count (does
    DoG's gain shrink on very small target sets?)."""
    parts = []
    for n in ipcs:
        col = [e for (_, k), e in grid.items() if k == n and e["rel_change"] is not None]
        if col:
            mean = sum(e["rel_change"] for e in col) / len(col)
            won = sum(e["better"] == "dog" for e in col)
            parts.append(f"{n}/class: mean {mean:+.1f}%, DoG resolved better in {won} of {len(col)}")
    return "By images per class: " + "; ".join(parts) + "." if parts else ""


# sample-quality metrics (lower is better), marginal and per class (intra_*); not the class-fidelity rates
QUALITY = tuple(m for m, lower in analysis.METRICS.items() if lower)


def in_regime(d: dict[str, Any]) -> str:
    """"yes" when (a) unguided class match is resolved above chance, (b) unguided is resolved worse than the real
    floor on a quality metric and (c) CFG resolved improves a quality metric on unguided ("yes (per class only)"
    when (c) holds on intra-class metrics alone); else the failed letters."""
    improved = [m for m, c in d.get("cfg_improves", {}).items() if m in QUALITY and c["improves"]]
    checks = {"a": bool(d.get("learned_classes", {}).get("above_chance")),
              "b": any(c["worse"] for m, c in d.get("worse_than_floor", {}).items() if m in QUALITY),
              "c": bool(improved)}
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        return "no (fails " + ", ".join(failed) + ")"
    return "yes" if any(not m.startswith("intra_") for m in improved) else "yes (per class only)"


def _rows_table(summary: list[dict[str, Any]], rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    metrics = [m for m in COLUMNS if any(m in r for _, r in rows)]
    lines = ["| Setting | " + " | ".join(COLUMNS[m][0] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for title, r in rows:
        lines.append(f"| {title} | " + " | ".join(fmt(r, m) for m in metrics) + " |")
    return lines


def _cells_text(cells: list[dict[str, Any]], key: str, x: Any, a: str, b: str) -> str:
    """The comparison cells of a vs b at ``key == x``: metric, relative change of a against b, resolved and who wins."""
    def flag(c: dict[str, Any]) -> str:
        if not c["resolved"]:
            return "not resolved"
        return f"resolved, {LABELS[a] if c['better'] == 'a' else LABELS[b]} better"

    picked = [c for c in cells if c.get(key) == x and c["a"] == a and c["b"] == b]
    return "; ".join(f"{c['metric']} {rel_change(c['mean_a'], c['mean_b'])} ({flag(c)})" for c in picked) or "n/a"


def _steps_section(rec: dict[str, Any]) -> list[str]:
    summary = rec["summary"]
    ns = sorted({r["sampling_steps"] for r in rec["runs"]})
    w = rec["runs"][0]["w"]
    rows = [(f"{NAMES[m]} ({n} steps)", analysis.find(summary, f"steps{n}", m, w)) for n in ns for m in ("cfg", "dog")]
    rows.append((NAMES["real"], analysis.find(summary, None, "real")))
    lines = [f"## Ablation: sampling steps (CFG and DoG at w = {w:g}; paper Fig. 3)", "",
             f"![metrics against sampling steps]({Path(rec['plot']).name})", "",
             *_rows_table(summary, [(t, r) for t, r in rows if r is not None]), "", "DoG vs CFG per step count:", ""]
    lines += [f"- {n} steps: " + _cells_text(rec["comparisons"], "sampling_steps", n, "dog", "cfg") for n in ns]
    return lines + [""]


def _uncond_section(rec: dict[str, Any]) -> list[str]:
    summary = rec["summary"]
    w = rec["runs"][0]["w"]
    steps = sorted(int(s) for s in rec["guides"])
    rows = [("CFG", analysis.find(summary, "reference", "cfg", w)), ("DoG (pre-trained guide)",
                                                                     analysis.find(summary, "reference", "dog", w))]
    rows += [(f"unconditional fine-tune as guide, {s} steps", analysis.find(summary, f"guide{s}", "uncond-guide", w))
             for s in steps]
    rows.append((NAMES["real"], analysis.find(summary, None, "real")))
    lines = [f"## Ablation: a separately fine-tuned unconditional guide (w = {w:g})", "",
             "The source fine-tuned on the target images with label dropout 1 (the null label only), used as DoG's "
             "guide at each checkpoint. The paper reports that such a guide gets worse the longer it trains.", "",
             f"![metrics against the guide's training steps]({Path(rec['plot']).name})", "",
             *_rows_table(summary, [(t, r) for t, r in rows if r is not None]), ""]
    for s in steps:
        lines.append(f"- {s} steps vs DoG: " + _cells_text(rec["comparisons"], "guide_steps", s, "uncond-guide", "dog"))
        lines.append(f"- {s} steps vs CFG: " + _cells_text(rec["comparisons"], "guide_steps", s, "uncond-guide", "cfg"))
    return lines + [""]


def _grid_section(rec: dict[str, Any]) -> list[str]:
    return ["## Ablation: the nine-grid (paper Fig. 4)", "",
            f"Columns {' | '.join(rec['columns'])}; rows w = {', '.join(f'{w:g}' for w in rec['w'])}; every panel "
            f"from seeds {rec['seeds'][0]}..{rec['seeds'][-1]} with labels {rec['labels']} ({rec['sampler']}, "
            f"{rec['steps']} steps). Blend: the unconditional branch is {rec['blend']:g} x the fine-tuned model's "
            f"null prediction + {1 - rec['blend']:g} x the pre-trained model's.", "",
            f"![nine-grid]({Path(rec['png']).name})", ""]


def write_study_report(results: dict[str, Any], out: Path) -> Path:
    """Write ``out/report.md`` (and its figures) from the study's results."""
    study = results["config"]
    base = study["base"]
    lines = ["# DoG demo study", "",
             f"Source: `{results['source']['checkpoint']}`. Base setting: {base['samples']} samples per set, seed "
             f"replicates {base['seeds']}, {base['sampler']} {base['steps']} steps, w {base['w']}, fine-tune lr "
             f"{base['finetune_lr']}, judge test accuracy {results['classifier'].get('test_accuracy', 'n/a')}. "
             f"FID {'on' if base['fid'] else 'off'}. This invocation took {results.get('seconds', 0):.0f} s (cells "
             "and ablations found finished were read back).", ""]
    if results["cells"]:
        lines += _map_section(results, out)
    sections = {"steps": _steps_section, "uncond-guide": _uncond_section, "nine-grid": _grid_section}
    for name, rec in results["ablations"].items():
        lines += sections[name](rec)
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
