"""The row of a reproduction: our numbers per method and protocol, the published ones beside them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...io.atomic import atomic_path, write_json
from .benchmarks import PUBLISHED_AVERAGES, PUBLISHED_PROTOCOL, PUBLISHED_SOURCE, benchmark
from .config import ReproduceConfig

ORDER = {"unguided": 0, "cfg": 1, "dog": 2}


def comparable(cfg: ReproduceConfig, protocol: str, method: str, w: float) -> bool:
    """Whether a number was made under the protocol of the published ones (so the two can be compared)."""
    p = PUBLISHED_PROTOCOL
    return (protocol == p["eval_protocol"] and cfg.num_samples == p["num_samples"] and cfg.sampler == p["sampler"]
            and cfg.steps == p["steps"] and (method == "unguided" or w == p["scale"])
            and cfg.train_preset == "dit-xl2-imagenet-published")


def rows_of(cfg: ReproduceConfig, scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bench = benchmark(cfg.benchmark)
    rows = []
    for s in scores:
        method, w, protocol = s["method"], float(s["w"]), s["protocol"]
        published = bench.published.get(method, {})
        rows.append({"benchmark": cfg.benchmark, "method": method, "w": w, "protocol": protocol,
                     "num_samples": s["num_samples"], "sampler": s["sampling"]["sampler"],
                     "steps": s["sampling"]["steps"], **{k: float(v) for k, v in s["metrics"].items()},
                     "published_fid": published.get("fid"), "published_average_fid": PUBLISHED_AVERAGES.get(
                         method, {}).get("fid"), "comparable_to_published": comparable(cfg, protocol, method, w)})
    return sorted(rows, key=lambda r: (r["protocol"], ORDER.get(r["method"], 9), r["w"]))


def _num(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(cfg: ReproduceConfig, rows: list[dict[str, Any]]) -> str:
    bench = benchmark(cfg.benchmark)
    lines = [f"{bench.title} ({cfg.benchmark}); ours: {cfg.train_preset}, {cfg.sampler} {cfg.steps} steps, "
             f"N = {cfg.num_samples:,}, reference: the full real {cfg.train_split} folder",
             "", "| method | w | protocol | N | FID | FD_DINOv2 | published FID | 6-target avg FID | comparable |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['w']:g} | {r['protocol']} | {r['num_samples']} | {_num(r.get('fid'))} | "
                     f"{_num(r.get('fd_dinov2'), '.1f')} | {_num(r['published_fid'])} | "
                     f"{_num(r['published_average_fid'])} | {'yes' if r['comparable_to_published'] else 'no'} |")
    lines += ["", f"published: {PUBLISHED_SOURCE}. 'comparable' = the same evaluation protocol, N, sampler, steps, "
                  "w and training recipe as the published number."]
    return "\n".join(lines) + "\n"


def write_row(cfg: ReproduceConfig, out: Path, scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``out/results.json`` (config, rows, published) and ``out/table.md``; returns the rows."""
    rows = rows_of(cfg, scores)
    write_json(out / "results.json", {"config": cfg.to_dict(), "rows": rows, "published_source": PUBLISHED_SOURCE,
                                      "published_averages": PUBLISHED_AVERAGES})
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown(cfg, rows))
    return rows
