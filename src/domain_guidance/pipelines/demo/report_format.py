"""Formatting of the demo's numbers: the metric columns (title, format, scale), table cells, row labels."""
from __future__ import annotations

from typing import Any

# metric -> (column title, format, display scale); lower/higher is better lives in analysis.METRICS
COLUMNS: dict[str, tuple[str, str, float]] = {
    "fid": ("FID (Inception) ↓", "{:.2f}", 1.0),
    "kid": ("KID×10³ (Inception) ↓", "{:.2f}", 1e3),
    "fd_classifier": ("FD (classifier) ↓", "{:.1f}", 1.0),
    "kid_classifier": ("KID (classifier) ↓", "{:.4g}", 1.0),  # unnormalised ReLU features: any scale
    "intra_fid": ("intra-class FID ↓", "{:.2f}", 1.0),
    "intra_kid": ("intra-class KID×10³ ↓", "{:.2f}", 1e3),
    "intra_fd_classifier": ("intra-class FD (classifier) ↓", "{:.1f}", 1.0),
    "intra_kid_classifier": ("intra-class KID (classifier) ↓", "{:.4g}", 1.0),
    "in_domain": ("in-domain rate ↑", "{:.3f}", 1.0),
    "class_match": ("class match ↑", "{:.3f}", 1.0),
    "domain_exact": ("in-domain rate, exact ↑", "{:.3f}", 1.0),
}
NAMES = {"unguided": "Unguided", "cfg": "CFG", "dog": "DoG", "real": "Real (floor)"}
# the per-w tables: marginal metrics, then the class-conditional ones with the judge's rates
TABLES = (("Marginal (all samples pooled vs the whole reference)", ("fid", "kid", "fd_classifier", "kid_classifier")),
          ("Per class (samples asked for class k vs the reference images of class k, mean over k) and the judge's "
           "rates", ("intra_fid", "intra_kid", "intra_fd_classifier", "intra_kid_classifier", "in_domain",
                     "class_match", "domain_exact")))


def value(metric: str, x: float) -> str:
    """One number in the metric's display format and scale."""
    _, form, scale = COLUMNS[metric]
    return form.format(x * scale)


def fmt(row: dict[str, Any], metric: str) -> str:
    """A table cell: the mean, with ± std (ddof 1) when there are several seed replicates."""
    if metric not in row:
        return "n/a"
    text = value(metric, row[metric])
    if row.get("replicates", 1) > 1:
        text += " ± " + value(metric, row[f"{metric}_std"])
    return text


def rel_change(new: float, old: float) -> str:
    """Relative change of ``new`` against ``old`` in percent (signed)."""
    return "n/a" if old == 0 else f"{100.0 * (new - old) / abs(old):+.1f}%"


def label(row: dict[str, Any]) -> str:
    """Row title: method, w and interval."""
    if row["method"] in ("unguided", "real"):
        return NAMES[row["method"]]
    inner = f"w={row['w']:g}"
    if row.get("interval"):
        inner += f", t∈[{row['interval'][0]:g},{row['interval'][1]:g}]"
    return f"{NAMES[row['method']]} ({inner})"


def short(row: dict[str, Any]) -> str:
    """Short row name for comparison rows."""
    return NAMES[row["method"]].split(" ")[0] + ("-int" if row.get("interval") else "")


def metrics_of(summary: list[dict]) -> list[str]:
    return [m for m in COLUMNS if any(m in r for r in summary)]


def cell(c: dict[str, Any] | None) -> str:
    """A comparison cell: the relative change of a against b, and whether the difference is resolved."""
    if c is None:
        return "n/a"
    return f"{rel_change(c['mean_a'], c['mean_b'])}, " + ("resolved" if c["resolved"] else "not resolved")
