"""What a demo run's numbers say: replicate summaries, the one "resolved" rule, comparisons, regime checks.

Pure functions on the run records of ``run_demo`` (plain dicts of floats); no files, no torch.
A *replicate* is one seed replicate: its value of a metric is one sample set's score. Floors are
rows with ``method == "real"``: real held-out target images scored like the samples, at the same N.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

# metric -> lower is better. intra_*: the intra-class version (samples asked for class k vs reference
# images of class k, mean over classes; metrics.intra_class): counts a sample of the wrong class
METRICS: dict[str, bool] = {
    "fid": True, "kid": True, "fd_classifier": True, "kid_classifier": True,
    "intra_fid": True, "intra_kid": True, "intra_fd_classifier": True, "intra_kid_classifier": True,
    "in_domain": False, "class_match": False,
    "domain_exact": False,  # glyph targets: the share of samples whose shape is in the target's hue band (exact)
}
# per-run extras averaged into the summary but never compared (the KID std over its subsets)
EXTRAS = ("kid_subset_std", "kid_classifier_subset_std")
RESOLVE_FACTOR = 2.0
RULE = ("|mean(a) - mean(b)| > 2 x the pooled sample std (ddof 1) of the two settings' per-replicate values "
        "(against a constant such as chance: 2 x the std of a's values); fewer than 2 replicates never resolve")
PAIRS = (("dog", "cfg"), ("cfg", "unguided"), ("dog", "unguided"))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """Pooled sample std of two groups: sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2))."""
    if len(a) < 2 and len(b) < 2:
        raise ValueError(f"a pooled std needs a group with >= 2 values, got {len(a)} and {len(b)}")
    sa, sb = mean_std(a)[1], mean_std(b)[1]
    return math.sqrt(((len(a) - 1) * sa ** 2 + (len(b) - 1) * sb ** 2) / (len(a) + len(b) - 2))


def resolved(a: Sequence[float], b: Sequence[float] | float, factor: float = RESOLVE_FACTOR) -> bool:
    """The demo's one rule: is the difference between two settings resolved by its seed replicates?

    ``a`` and ``b`` are one metric's values, one per seed replicate (e.g. CFG's FID in replicates
    0, 1, 2 and DoG's). The difference is *resolved* when

        |mean(a) - mean(b)| > factor * pooled std,   factor = 2,

    with the pooled sample std (ddof 1) of the two groups' replicate values. A plain number ``b``
    is an exact constant (e.g. chance level 1/K): then the std of ``a`` alone is used. Fewer than
    two replicates cannot resolve anything (False); a zero spread resolves any non-zero difference.
    Example: a = [10, 11, 12], b = [14, 15, 16]: |11 - 15| = 4 > 2 * 1 = 2, resolved.
    """
    if isinstance(b, (int, float)):
        if len(a) < 2:
            return False
        return abs(mean_std(a)[0] - float(b)) > factor * mean_std(a)[1]
    if len(a) < 2 or len(b) < 2:
        return False
    return abs(mean_std(a)[0] - mean_std(b)[0]) > factor * pooled_std(a, b)


def _key(r: dict[str, Any]) -> tuple:
    interval = r.get("interval")
    return (r.get("finetune"), r["method"], r.get("w"), None if interval is None else tuple(interval))


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (finetune, method, w, interval): per metric the replicate values, mean and std (ddof 1)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_key(r), []).append(r)
    rows = []
    for (ft, method, w, interval), rs in groups.items():
        row: dict[str, Any] = {"finetune": ft, "method": method, "w": w,
                               "interval": None if interval is None else list(interval),
                               "replicates": len(rs), "seeds": [r["seed"] for r in rs], "values": {}}
        for m in (*METRICS, *EXTRAS):
            vals = [float(r[m]) for r in rs if r.get(m) is not None]
            if vals:
                row["values"][m] = vals
                row[m], row[f"{m}_std"] = mean_std(vals)
        rows.append(row)
    return rows


def find(summary: list[dict[str, Any]], ft: str | None, method: str, w: float | None = None,
         interval: Sequence[float] | None = None) -> dict[str, Any] | None:
    """The summary row of one setting (unguided and real rows: any w), or None."""
    for r in summary:
        if r["method"] != method or (method != "real" and r["finetune"] != ft):
            continue
        if method in ("unguided", "real"):
            return r
        if r["w"] == w and (r.get("interval") or None) == (list(interval) if interval else None):
            return r
    return None


def compare(a: dict[str, Any], b: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """One comparison cell: a's and b's means, the difference a - b, the pooled std, resolved, better."""
    va, vb = a.get("values", {}).get(metric), b.get("values", {}).get(metric)
    if not va or not vb:
        return None
    diff = a[metric] - b[metric]
    spread = pooled_std(va, vb) if max(len(va), len(vb)) > 1 else None
    is_resolved = resolved(va, vb)
    lower = METRICS[metric]
    better = None if not is_resolved else ("a" if (diff < 0) == lower else "b")
    return {"metric": metric, "mean_a": a[metric], "mean_b": b[metric], "diff": diff, "pooled_std": spread,
            "resolved": is_resolved, "better": better}


def _label(row: dict[str, Any]) -> dict[str, Any]:
    return {"method": row["method"], "w": row["w"], "interval": row.get("interval")}


def comparisons(summary: list[dict[str, Any]], ft: str) -> list[dict[str, Any]]:
    """Every comparison cell of one fine-tune: DoG vs CFG, CFG vs unguided, DoG vs unguided at each w
    (DoG with a guidance interval too), and each setting vs the real floor."""
    rows = [r for r in summary if r["finetune"] == ft]
    unguided, real = find(summary, ft, "unguided"), find(summary, ft, "real")
    out = []

    def add(a: dict[str, Any] | None, b: dict[str, Any] | None) -> None:
        if a is None or b is None:
            return
        for m in METRICS:
            cell = compare(a, b, m)
            if cell is not None:
                out.append({"finetune": ft, "a": _label(a), "b": _label(b), **cell})

    for dog in (r for r in rows if r["method"] == "dog"):
        add(dog, find(summary, ft, "cfg", dog["w"]))
        add(dog, unguided)
        if dog.get("interval"):
            add(dog, find(summary, ft, "dog", dog["w"]))
    for cfg in (r for r in rows if r["method"] == "cfg"):
        add(cfg, unguided)
    for row in rows:
        add(row, real)
    return out


def find_comparison(cells: list[dict[str, Any]], a: dict[str, Any], b: dict[str, Any],
                    metric: str) -> dict[str, Any] | None:
    """The comparison cell of rows ``a`` vs ``b`` on ``metric`` (as ``comparisons`` made it), or None."""
    la, lb = _label(a), _label(b)
    return next((c for c in cells if c["a"] == la and c["b"] == lb and c["metric"] == metric), None)


def best_w(summary: list[dict[str, Any]], ft: str, method: str, metric: str) -> dict[str, Any] | None:
    """The row of ``method`` (no interval) with the best mean of ``metric`` over w."""
    rows = [r for r in summary if r["finetune"] == ft and r["method"] == method and not r.get("interval")
            and metric in r]
    if not rows:
        return None
    return (min if METRICS[metric] else max)(rows, key=lambda r: r[metric])


def diagnostics(summary: list[dict[str, Any]], ft: str, num_classes: int) -> dict[str, Any]:
    """The regime checks of one fine-tune, computed from its summary rows.

    learned_classes: unguided class match vs chance (1 / K) and vs the real ceiling, with
    ``above_chance`` (resolved against the constant) and ``fraction_of_ceiling`` =
    (match - chance) / (ceiling - chance). worse_than_floor: per metric, unguided vs the real
    floor (gap and resolved flag). cfg_improves: per metric, CFG at its best w (selected on the
    same numbers, so an optimistic pick) vs unguided.
    """
    unguided, real = find(summary, ft, "unguided"), find(summary, ft, "real")
    out: dict[str, Any] = {"finetune": ft, "num_classes": num_classes}
    if unguided is not None and "class_match" in unguided:
        chance = 1.0 / num_classes
        ceiling = real.get("class_match") if real is not None else None
        out["learned_classes"] = {
            "unguided_class_match": unguided["class_match"], "unguided_class_match_std": unguided["class_match_std"],
            "chance": chance, "real_ceiling": ceiling,
            "above_chance": resolved(unguided["values"]["class_match"], chance)
            and unguided["class_match"] > chance,
            "fraction_of_ceiling": None if ceiling is None or ceiling == chance
            else (unguided["class_match"] - chance) / (ceiling - chance),
            "below_ceiling": None if real is None else resolved(unguided["values"]["class_match"],
                                                                 real["values"]["class_match"])
            and unguided["class_match"] < ceiling}
    if unguided is not None and real is not None:
        worse = {}
        for m in METRICS:
            cell = compare(unguided, real, m)
            if cell is not None:
                worse[m] = {**cell, "worse": cell["better"] == "b"}
        out["worse_than_floor"] = worse
    if unguided is not None:
        improves = {}
        for m in METRICS:
            best = best_w(summary, ft, "cfg", m)
            cell = compare(best, unguided, m) if best is not None else None
            if cell is not None:
                improves[m] = {**cell, "w": best["w"], "improves": cell["better"] == "a"}
        out["cfg_improves"] = improves
    return out
