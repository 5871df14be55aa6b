"""Figures of the study: the DoG-vs-CFG heat maps and the ablations' metric-against-x line plots (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ...io.atomic import atomic_path
from . import analysis
from .report import COLUMNS, NAMES, metrics_of, value

COLORS = {"cfg": "tab:blue", "dog": "tab:orange", "uncond-guide": "tab:green", "unguided": "gray"}
LABELS = {**NAMES, "uncond-guide": "unconditional fine-tune as guide"}


def plt_figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib figure with a rows x cols grid of axes (always 2-D)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def cell_text(e: dict[str, Any] | None) -> str:
    """A map cell's annotation: relative change, resolved or not, the real floor (metric's display scale)."""
    if e is None:
        return "n/a"
    rel = "n/a" if e["rel_change"] is None else f"{e['rel_change']:+.1f}%"
    flag = "resolved" if e["resolved"] else "not resolved"
    floor = "" if e["floor"] is None else f"\nfloor {value(e['metric'], e['floor'])}"
    return f"{rel}\n{flag}{floor}"


def dog_gain(e: dict[str, Any]) -> float:
    """The relative change signed so that > 0 means DoG better (lower for lower-is-better metrics)."""
    rel = e["rel_change"] or 0.0
    return -rel if analysis.METRICS[e["metric"]] else rel


def draw_map(entries: list[dict[str, Any]], w: float, lengths: list[int], ipcs: list[int], path: Path) -> Path:
    """One heat map per metric: rows fine-tune steps, columns images per class, colour = DoG's relative gain over
    CFG (blue: DoG better, red: CFG better), unresolved cells hatched, each cell annotated with ``cell_text``."""
    import numpy as np

    at_w = [e for e in entries if e["w"] == w]
    metrics = [m for m in analysis.METRICS if any(e["metric"] == m for e in at_w)]
    if not metrics:
        raise ValueError(f"no map entries at w={w:g}")
    cols = min(3, len(metrics))
    rows_n = -(-len(metrics) // cols)
    fig, axes = plt_figure(rows_n, cols, (1.6 + 1.5 * len(ipcs) * cols, 1.2 + 1.1 * len(lengths) * rows_n))
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, metrics):
        grid = {(e["finetune_steps"], e["images_per_class"]): e for e in at_w if e["metric"] == m}
        gain = np.full((len(lengths), len(ipcs)), np.nan)
        for (i, s), (j, n) in ((a, b) for a in enumerate(lengths) for b in enumerate(ipcs)):
            if (s, n) in grid:
                gain[i, j] = dog_gain(grid[(s, n)])
        vmax = max(1.0, float(np.nanmax(np.abs(gain))) if np.isfinite(gain).any() else 1.0)
        ax.imshow(np.ma.masked_invalid(gain), cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        for (i, s), (j, n) in ((a, b) for a in enumerate(lengths) for b in enumerate(ipcs)):
            e = grid.get((s, n))
            if e is not None and not e["resolved"]:
                ax.add_patch(_hatch(j, i))
            ax.text(j, i, cell_text(e), ha="center", va="center", fontsize=6.5,
                    fontweight="bold" if e is not None and e["resolved"] else "normal",
                    bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1.5))
        ax.set_xticks(range(len(ipcs)), [str(n) for n in ipcs])
        ax.set_yticks(range(len(lengths)), [str(s) for s in lengths])
        ax.set_xlabel("images per class", fontsize=8)
        ax.set_ylabel("fine-tune steps", fontsize=8)
        ax.set_title(f"{COLUMNS[m][0]}: DoG vs CFG", fontsize=8)
    fig.suptitle(f"w = {w:g}: relative change of DoG against CFG (blue: DoG better; hatched: not resolved)",
                 fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _hatch(x: float, y: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.6", linewidth=0)


def metric_lines(summary: list[dict[str, Any]], name: str, x_of: Callable[[dict[str, Any]], float | None],
                 path: Path, xlabel: str, log_x: bool = False) -> Path:
    """One panel per metric: each method's mean ± std (ddof 1) over seed replicates against x (``x_of(row)``);
    rows without an x (reference CFG / DoG) dashed, the real floor dotted."""
    metrics = metrics_of(summary)
    cols = min(3, len(metrics))
    rows_n = -(-len(metrics) // cols)
    fig, axes = plt_figure(rows_n, cols, (3.6 * cols, 3.0 * rows_n))
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, metrics):
        scale = COLUMNS[m][2]
        for method in ("cfg", "dog", "uncond-guide"):
            pts = sorted(((x_of(r), r) for r in summary if r["method"] == method and m in r and x_of(r) is not None),
                         key=lambda p: p[0])
            if pts:
                ax.errorbar([x for x, _ in pts], [r[m] * scale for _, r in pts],
                            yerr=[r[f"{m}_std"] * scale for _, r in pts], marker="o", capsize=3,
                            color=COLORS[method], label=LABELS[method])
            for r in (r for r in summary if r["method"] == method and m in r and x_of(r) is None):
                ax.axhline(r[m] * scale, color=COLORS[method], linestyle="--", label=f"{LABELS[method]}")
        real = next((r for r in summary if r["method"] == "real" and m in r), None)
        if real is not None:
            ax.axhline(real[m] * scale, color="gray", linestyle=":", label=NAMES["real"])
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(COLUMNS[m][0], fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(name, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
