"""The pure logic of benchmarks/solver_quality.py (not a benchmark by itself): network evaluations per image of
each sampler, the steps that fit an evaluation budget, the "within the spread of the reference" rule and the
fewest evaluations from which a solver stays within it, and the pilot's choice of solvers.

NFE convention: one network evaluation per image is one call of the (guided) denoiser on that image, i.e. one
branch pair for CFG and DoG (each pair is two network forwards: conditional + unconditional branch, both methods
alike; ``settings.json`` records the branch counts, ``total`` = 2 x NFE). DDPM, DDIM and the multistep diffusers
solvers make one call per step; diffusers' Heun makes two per step but the last (2 steps - 1).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from domain_guidance.pipelines.demo import analysis

TWO_CALLS_PER_STEP = frozenset({"heun", "flow-heun"})  # 2 evaluations per step but the last


def nfe_of(sampler: str, steps: int) -> int:
    """Network evaluations per image (branch pairs for guided methods) of ``sampler`` run for ``steps`` steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return 2 * steps - 1 if sampler in TWO_CALLS_PER_STEP else steps


def branch_evaluations(method: str, sampler: str, steps: int) -> int:
    """Network forwards per image, both branches counted (``settings.json``'s ``total``): 2 x NFE for CFG and DoG
    alike (CFG's two branches are both the fine-tune's), NFE unguided."""
    return nfe_of(sampler, steps) * (1 if method == "unguided" else 2)


def steps_for(sampler: str, nfe: int) -> int:
    """The most steps of ``sampler`` whose evaluations per image stay within ``nfe`` (heun: an even budget
    leaves one unused); at least 2 steps."""
    steps = (nfe + 1) // 2 if sampler in TWO_CALLS_PER_STEP else nfe
    if steps < 2:
        raise ValueError(f"{sampler}: a budget of {nfe} evaluations per image allows {steps} step(s); "
                         "expected a budget of at least 2 steps")
    return steps


def within(values: Sequence[float], reference: Sequence[float]) -> bool:
    """Is a setting within the spread of the reference on one metric: no resolved difference between the two
    settings' per-replicate values (the demo's rule, ``analysis.resolved``: |mean diff| <= 2 pooled std)."""
    return not analysis.resolved(list(values), list(reference))


def fewest_within(values_by_nfe: Mapping[int, Sequence[float]], reference: Sequence[float]) -> int | None:
    """The fewest evaluations from which on a solver stays within the reference's spread: the smallest measured
    NFE n such that every measured NFE >= n is within; None if the solver's largest measured NFE is not."""
    best = None
    for nfe in sorted(values_by_nfe, reverse=True):
        if not within(values_by_nfe[nfe], reference):
            break
        best = nfe
    return best


def fewest_table(summary: list[dict[str, Any]], reference: dict[str, Any], solver: str, method: str,
                 metrics: Sequence[str]) -> dict[str, int | None]:
    """Per metric, ``fewest_within`` of one solver's rows (``finetune`` = ``"<solver>@<nfe>"``) for ``method``."""
    rows = {int(r["finetune"].split("@")[1]): r for r in summary
            if r["method"] == method and (r.get("finetune") or "").split("@")[0] == solver}
    out: dict[str, int | None] = {}
    for m in metrics:
        vals = {n: r["values"][m] for n, r in rows.items() if m in r.get("values", {})}
        out[m] = fewest_within(vals, reference["values"][m]) if vals and m in reference.get("values", {}) else None
    return out


def choose_solvers(pilot: Mapping[str, Mapping[int, float]], sampler_of: Mapping[str, str], how_many: int = 2,
                   ) -> list[str]:
    """The pilot's pick: candidates ranked by their error at the smallest budget (ties: the next budget), lower
    better, keeping the best-ranked variant of each sampler; the first ``how_many`` distinct samplers."""
    budgets = sorted({n for errors in pilot.values() for n in errors})
    ranked = sorted(pilot, key=lambda name: tuple(pilot[name].get(n, float("inf")) for n in budgets))
    chosen: list[str] = []
    for name in ranked:
        if sampler_of[name] not in {sampler_of[c] for c in chosen}:
            chosen.append(name)
    return chosen[:how_many]
