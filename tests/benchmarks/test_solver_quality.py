"""benchmarks/solver_quality.py's pure logic: NFE accounting per sampler, the steps a budget allows, the
"within the spread" rule, the fewest NFE from which a solver stays within it, and the pilot's choice."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _solver_nfe import (branch_evaluations, choose_solvers, fewest_table, fewest_within, nfe_of,  # noqa: E402
                         steps_for, within)

from domain_guidance.core.sampling import get_sampler  # noqa: E402

REF = [10.0, 11.0, 12.0]  # mean 11, std 1


@pytest.mark.parametrize("sampler, steps, nfe", [("ddpm", 50, 50), ("ddim", 25, 25), ("dpm-solver++", 6, 6),
                                                 ("unipc", 10, 10), ("heun", 5, 9), ("heun", 3, 5)])
def test_nfe_of_matches_the_network_times_each_sampler_visits(sampler, steps, nfe):
    assert nfe_of(sampler, steps) == nfe
    visits = get_sampler(sampler).timesteps(str(steps))  # distinct network times: heun's repeat, so 1 + 2 (n - 1)
    assert (2 * len(visits) - 1 if sampler == "heun" else len(visits)) == nfe


@pytest.mark.parametrize("method, sampler, steps, total", [("cfg", "ddim", 8, 16), ("dog", "ddpm", 8, 16),
                                                          ("dog", "heun", 5, 18), ("unguided", "unipc", 6, 6)])
def test_branch_evaluations_count_both_branches_of_a_guided_step(method, sampler, steps, total):
    # as generate records them (tests/pipelines/test_precision_nfe.py): dog model N + guide N, cfg model 2N
    assert branch_evaluations(method, sampler, steps) == total


@pytest.mark.parametrize("sampler, budget, steps", [("ddim", 10, 10), ("unipc", 6, 6), ("heun", 10, 5),
                                                    ("heun", 9, 5), ("heun", 6, 3)])
def test_steps_for_is_the_most_steps_within_the_budget(sampler, budget, steps):
    assert steps_for(sampler, budget) == steps
    assert nfe_of(sampler, steps) <= budget < nfe_of(sampler, steps + 1)


def test_steps_for_refuses_a_budget_below_two_steps():
    with pytest.raises(ValueError, match="heun: a budget of 2 evaluations"):
        steps_for("heun", 2)


def test_within_is_the_demo_rule():
    assert within([11.5, 12.5, 13.5], REF)  # |diff| 1.5 <= 2 pooled std (1)
    assert not within([13.5, 14.5, 15.5], REF)  # 3.5 > 2: resolved worse
    assert not within([6.5, 7.5, 8.5], REF)  # resolved better is outside the spread too


def test_fewest_within_needs_every_larger_budget_within():
    vals = {6: [11.0, 12.0, 13.0], 10: [20.0, 21.0, 22.0], 20: [11.0, 12.0, 13.0], 50: [10.0, 11.0, 12.0]}
    assert fewest_within(vals, REF) == 20  # 6 is within by chance, 10 is not: the solver is within from 20 on
    assert fewest_within({**vals, 10: [11.0, 11.5, 12.0]}, REF) == 6
    assert fewest_within({**vals, 50: [30.0, 31.0, 32.0]}, REF) is None  # not within at its largest NFE


def test_fewest_table_reads_one_solver_and_method():
    def row(ft, method, v):
        return {"finetune": ft, "method": method, "values": {"fid": v, "class_match": v}}
    summary = [row("unipc@6", "dog", [20.0, 21.0, 22.0]), row("unipc@10", "dog", [11.0, 12.0, 13.0]),
               row("unipc@6", "cfg", REF), row("unipc3@6", "dog", REF), row("ddpm@100", "dog", REF)]
    ref = summary[-1]
    assert fewest_table(summary, ref, "unipc", "dog", ["fid", "class_match"]) == {"fid": 10, "class_match": 10}


def test_choose_solvers_takes_the_best_variant_of_two_distinct_samplers():
    errors = {"dpm": {6: 0.016, 10: 0.01}, "dpm3": {6: 0.015, 10: 0.02}, "unipc": {6: 0.02, 10: 0.005},
              "deis": {6: 0.02, 10: 0.006}, "euler": {6: 0.05, 10: 0.03}}
    samplers = {"dpm": "dpm-solver++", "dpm3": "dpm-solver++", "unipc": "unipc", "deis": "deis", "euler": "euler"}
    # ranked by the smallest budget first (dpm3 0.015, dpm 0.016), ties broken at the next (unipc 0.005 < deis
    # 0.006); dpm is the second best but the same sampler as dpm3
    assert choose_solvers(errors, samplers) == ["dpm3", "unipc"]
