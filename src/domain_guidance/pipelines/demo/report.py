"""Markdown report of a demo run: the paper-style table, the protocol, metric-vs-w plots, sample grids.

Every number is read from the results dict that ``run_demo`` produced (also saved as results.json).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...io.atomic import atomic_path
from ...io.images import save_grid
from ..generate import load_samples

# metric -> (column title, lower is better, format)
COLUMNS: dict[str, tuple[str, bool, str]] = {
    "fid": ("FID (Inception) ↓", True, "{:.2f}"),
    "fd_classifier": ("FD (classifier) ↓", True, "{:.3f}"),
    "in_domain": ("in-domain rate ↑", False, "{:.3f}"),
    "class_match": ("class match ↑", False, "{:.3f}"),
}
NAMES = {"unguided": "Unguided", "cfg": "CFG", "dog": "DoG"}


def fmt(row: dict[str, Any], metric: str) -> str:
    """A table cell: the mean, with ± std when there are several seed replicates."""
    if metric not in row:
        return "n/a"
    text = COLUMNS[metric][2].format(row[metric])
    if row.get("replicates", 1) > 1:
        text += " ± " + COLUMNS[metric][2].format(row[f"{metric}_std"])
    return text


def rel_change(new: float, old: float) -> str:
    """Relative change of ``new`` against ``old`` in percent (signed)."""
    return "n/a" if old == 0 else f"{100.0 * (new - old) / abs(old):+.1f}%"


def _find(summary: list[dict], ft: str, method: str, w: float) -> dict[str, Any] | None:
    return next((r for r in summary if r["finetune"] == ft and r["method"] == method and r["w"] == w), None)


def metrics_of(summary: list[dict]) -> list[str]:
    return [m for m in COLUMNS if any(m in r for r in summary)]


def table(summary: list[dict], ft: str, w: float) -> list[str]:
    """Markdown lines: methods x metrics at one w, then DoG's relative change vs CFG and vs unguided."""
    metrics = metrics_of(summary)
    lines = ["| Method | " + " | ".join(COLUMNS[m][0] for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    rows = {"unguided": _find(summary, ft, "unguided", 1.0), "cfg": _find(summary, ft, "cfg", w),
            "dog": _find(summary, ft, "dog", w)}
    for method, row in rows.items():
        if row is not None:
            label = NAMES[method] + ("" if method == "unguided" else f" (w={w:g})")
            lines.append(f"| {label} | " + " | ".join(fmt(row, m) for m in metrics) + " |")
    dog = rows["dog"]
    for other in ("cfg", "unguided"):
        if dog is not None and rows[other] is not None:
            cells = [rel_change(dog[m], rows[other][m]) if m in dog and m in rows[other] else "n/a" for m in metrics]
            lines.append(f"| DoG vs {NAMES[other]} | " + " | ".join(cells) + " |")
    return lines


def verdict(summary: list[dict], ft: str, ws: list[float]) -> list[str]:
    """One sentence per w and metric family saying plainly whether DoG beat CFG."""
    lines = []
    for w in ws:
        cfg, dog = _find(summary, ft, "cfg", w), _find(summary, ft, "dog", w)
        if cfg is None or dog is None:
            continue
        for m in metrics_of(summary):
            lower = COLUMNS[m][1]
            better = dog[m] < cfg[m] if lower else dog[m] > cfg[m]
            word = "ties with" if dog[m] == cfg[m] else "beats" if better else "does NOT beat"
            lines.append(f"- w={w:g}, {m}: DoG {word} CFG ({COLUMNS[m][2].format(dog[m])} vs "
                         f"{COLUMNS[m][2].format(cfg[m])}).")
    return lines


def plot(summary: list[dict], ft: str, out: Path) -> Path:
    """One panel per metric: metric against w for CFG and DoG, unguided as a dashed level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics_of(summary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for method in ("cfg", "dog"):
            rows = sorted((r for r in summary if r["finetune"] == ft and r["method"] == method and m in r),
                          key=lambda r: r["w"])
            if rows:
                ax.errorbar([r["w"] for r in rows], [r[m] for r in rows], yerr=[r[f"{m}_std"] for r in rows],
                            marker="o", capsize=3, label=NAMES[method])
        unguided = _find(summary, ft, "unguided", 1.0)
        if unguided is not None and m in unguided:
            ax.axhline(unguided[m], color="gray", linestyle="--", label="Unguided")
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
    """One mosaic, a row per setting (unguided, then CFG / DoG at each w), first seed replicate, same seeds."""
    rep = results["config"]["seeds"][0]
    rows = []
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
    cfg, summary = results["config"], results["summary"]
    n_ref = results["reference"]["images"]
    lines = ["# Domain Guidance demo: animal-mnist transfer", "",
             "All numbers below were produced by this run (`results.json` next to this file).", "",
             "## Protocol", "",
             f"- Source model: `{results['source']['checkpoint']}` (classes 0-5 of animal-mnist, 16 px, "
             "label dropout 0.1"
             + (f", pre-trained here for {results['source']['steps']} steps"
                if results["source"]["trained_now"] else "")
             + ").",
             f"- Target domain: classes {cfg['target_classes']}, {cfg['images_per_class']} training images per class; "
             f"full fine-tune for {cfg['finetune_steps']} steps (batch {cfg['finetune_batch']}).",
             f"- Sampling: {cfg['sampler'].upper()} with {cfg['steps']} steps, "
             f"N = {cfg['samples']} samples per setting "
             f"(class-balanced), w in {cfg['w']}, seed replicates {cfg['seeds']} (replicate r uses seeds "
             "r*100000 + 0..N-1; every method sees the same seeds).",
             f"- Reference: {n_ref} held-out target test images. FID: real FID-Inception weights "
             "(pool3 features; exact Frechet distance)."
             if cfg["fid"] else f"- Reference: {n_ref} held-out target test images. FID: not computed (--no-fid).",
             f"- Classifier judge: small CNN on all 10 classes (test accuracy "
             f"{results['classifier']['test_accuracy']:.3f}); in-domain rate = share of samples classified into a "
             "target class; class match = share classified as the requested class; FD (classifier) = Frechet "
             "distance of its 128-d penultimate features vs the reference.",
             f"- Stage wall times (s): {results['stage_seconds']}.", ""]
    for ft, info in results["finetunes"].items():
        lines += [f"## Fine-tune with label dropout {info['label_dropout']:g} (`{ft}`)", ""]
        for w in cfg["w"]:
            lines += [f"### w = {w:g}", ""] + table(summary, ft, float(w)) + [""]
        lines += ["### Does DoG beat CFG?", ""] + (verdict(summary, ft, [float(w) for w in cfg["w"]])
                                                   or ["- No CFG available for this fine-tune (no null label)."])
        lines += ["", f"![metrics vs w]({plot(summary, ft, out).name})", "",
                  f"Samples (rows: unguided, then CFG / DoG per w in {cfg['w']}; same seeds in every row):", "",
                  f"![samples]({grids(results, ft, out).name})", ""]
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
