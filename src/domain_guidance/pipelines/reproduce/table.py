"""The row of a reproduction: our numbers per method and protocol, the published ones beside them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...io.atomic import atomic_path, write_json
from .benchmarks import PUBLISHED_AVERAGES, PUBLISHED_SOURCE, benchmark
from .comparability import first_difference, protocol_of, published_protocol, reference_label
from .config import ReproduceConfig

ORDER = {"unguided": 0, "cfg": 1, "dog": 2}


def rows_of(cfg: ReproduceConfig, scores: list[dict[str, Any]], split: str,
            recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per score record, with what it was made with and whether (else why not) it is comparable
    (``split``, ``recipe``: comparability.split_of / recipe_of of the data and fine-tune the row used)."""
    bench = benchmark(cfg.benchmark)
    rows = []
    for s in scores:
        method, w, protocol = s["method"], float(s["w"]), s["protocol"]
        published = bench.published.get(method, {})
        ours = protocol_of(s, split, recipe)
        differs = first_difference(ours, published_protocol(cfg.benchmark, method))
        rows.append({"benchmark": cfg.benchmark, "method": method, "w": w, "protocol": protocol,
                     "num_samples": s["num_samples"], "sampler": ours["sampler"], "steps": ours["steps"],
                     "channels": ours["channels"], "split": split, "reference": reference_label(s, split),
                     **{k: float(v) for k, v in s["metrics"].items()},
                     "published_fid": published.get("fid"), "published_average_fid": PUBLISHED_AVERAGES.get(
                         method, {}).get("fid"), "comparable_to_published": differs is None,
                     "differs_from_published": differs})
    return sorted(rows, key=lambda r: (r["protocol"], ORDER.get(r["method"], 9), r["w"]))


def _num(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _verdict(r: dict[str, Any]) -> str:
    return "yes" if r["comparable_to_published"] else f"no: {r['differs_from_published'].split(' (')[0]}"


def markdown(cfg: ReproduceConfig, rows: list[dict[str, Any]]) -> str:
    bench = benchmark(cfg.benchmark)
    refs = sorted({r["reference"] for r in rows})
    lines = [f"{bench.title} ({cfg.benchmark}); ours: {cfg.train_preset}, {cfg.sampler} {cfg.steps} steps, "
             f"N = {cfg.num_samples:,}, split: {rows[0]['split'] if rows else '-'}; reference: {'; '.join(refs)}",
             "", "| method | w | channels | protocol | N | FID | FD_DINOv2 | published FID | 6-target avg FID | "
             "comparable |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ch = "-" if r["method"] == "unguided" else ("all" if r["channels"] is None else r["channels"])
        lines.append(f"| {r['method']} | {r['w']:g} | {ch} | {r['protocol']} | {r['num_samples']} | "
                     f"{_num(r.get('fid'))} | {_num(r.get('fd_dinov2'), '.1f')} | {_num(r['published_fid'])} | "
                     f"{_num(r['published_average_fid'])} | {_verdict(r)} |")
    lines += ["", f"published: {PUBLISHED_SOURCE}. 'comparable' = the same evaluation protocol, reference rule, N, "
                  "sampler, steps, w, guided channels, split and training recipe as the published number; 'no' "
                  "names the first that differs (results.json: differs_from_published). See docs/protocols.md."]
    return "\n".join(lines) + "\n"


def write_row(cfg: ReproduceConfig, out: Path, scores: list[dict[str, Any]], split: str,
              recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """``out/results.json`` (config, rows, published) and ``out/table.md``; returns the rows."""
    rows = rows_of(cfg, scores, split, recipe)
    write_json(out / "results.json", {"config": cfg.to_dict(), "rows": rows, "published_source": PUBLISHED_SOURCE,
                                      "published_averages": PUBLISHED_AVERAGES})
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown(cfg, rows))
    return rows
