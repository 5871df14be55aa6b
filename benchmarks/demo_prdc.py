"""Precision / recall / density / coverage (k = 5, FID-Inception pool3) of every set of a ``dog demo`` run.

A diagnostic of *why* guidance does or does not lower FID there: guidance that prunes off-manifold
samples raises precision (and usually lowers recall); samples that stay off the real manifold keep a
low precision and density whatever w is. Reads the run's cached Inception features (no network is
run); the real floor sets are scored the same way. Mean ± std (ddof 1) over the seed replicates.

    .venv/bin/python benchmarks/demo_prdc.py --run runs/demo
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from domain_guidance.pipelines.metrics import prdc

METRICS = ("precision", "recall", "density", "coverage")


def table(run: Path, k: int = 5) -> str:
    """Markdown table of PRDC per setting of the demo run in ``run``."""
    results = json.loads((run / "results.json").read_text())
    with np.load(run / "fid-reference.npz") as z:
        ref = z["features"]  # (N_ref, 2048)
    groups: dict[str, list[dict[str, float]]] = {}
    for r in results["runs"] + results.get("floors", []):
        if not r.get("inception_features"):
            raise ValueError(f"{run}: set {r.get('samples') or r.get('images')} has no cached Inception features "
                             "(a run with --no-fid); expected a run that computed FID")
        with np.load(r["inception_features"]) as z:
            feats = z["features"]  # (N, 2048)
        name = "real (floor)" if r["method"] == "real" else f"{r['method']} w={r['w']:g}" + (
            f" t in [{r['interval'][0]:g}, {r['interval'][1]:g}]" if r.get("interval") else "")
        groups.setdefault(name, []).append(prdc(ref, feats, k=k))
    lines = [f"| setting (k = {k}) | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, vals in groups.items():
        cells = [f"{np.mean([v[m] for v in vals]):.3f} ± {np.std([v[m] for v in vals], ddof=1) if len(vals) > 1 else 0:.3f}"
                 for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo", help="a `dog demo` output folder [default: runs/demo]")
    p.add_argument("--k", type=int, default=5, help="nearest neighbours [default: 5]")
    args = p.parse_args(argv)
    print(table(Path(args.run), args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
