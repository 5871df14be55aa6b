"""The demo's "resolved" rule, replicate summaries, comparison cells and regime checks, on hand-computed numbers."""
from __future__ import annotations

import pytest

from domain_guidance.pipelines.demo import analysis
from domain_guidance.pipelines.demo.analysis import pooled_std, resolved


def test_resolved_rule_on_hand_computed_numbers() -> None:
    # means 11 and 15, both stds 1: pooled std 1, |diff| 4 > 2
    assert resolved([10, 11, 12], [14, 15, 16])
    # |diff| 2 is not > 2 * 1: the rule is strict
    assert not resolved([10, 11, 12], [12, 13, 14])
    # unequal groups: s_a^2 = 2, s_b^2 = 5/3, pooled var (1 * 2 + 3 * 5/3) / 4 = 1.75
    assert pooled_std([1, 3], [4, 5, 6, 7]) == pytest.approx(1.75 ** 0.5, rel=1e-12)
    assert resolved([1, 3], [4, 5, 6, 7])  # 3.5 > 2 * 1.3229 = 2.6458
    # s_b^2 = 20/3: pooled var (2 + 20) / 4 = 5.5, 2 * 2.345 = 4.69 > |2 - 6| = 4
    assert pooled_std([1, 3], [3, 5, 7, 9]) == pytest.approx(5.5 ** 0.5, rel=1e-12)
    assert not resolved([1, 3], [3, 5, 7, 9])
    # against an exact constant (chance level): the std of the replicates alone (0.02 here)
    assert resolved([0.30, 0.32, 0.34], 0.25)  # 0.07 > 0.04
    assert not resolved([0.30, 0.32, 0.34], 0.29)  # 0.03 < 0.04
    # one replicate resolves nothing; zero spread resolves any difference
    assert not resolved([10.0], [20.0]) and not resolved([10.0], 0.0)
    assert resolved([1.0, 1.0], [1.5, 1.5]) and not resolved([1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="at least one value"):
        analysis.mean_std([])


def _run(method: str, w: float | None, seed: int, ft: str | None = "ld0.1", interval=None, **metrics) -> dict:
    return {"finetune": ft, "method": method, "w": w, "interval": interval, "seed": seed, "n": 8, **metrics}


def _runs() -> list[dict]:
    runs = []
    for i, seed in enumerate((0, 1, 2)):
        runs.append(_run("real", None, seed, ft=None, fid=[30.0, 31.0, 32.0][i], class_match=[0.90, 0.92, 0.94][i]))
        runs.append(_run("unguided", 1.0, seed, fid=[50.0, 51.0, 52.0][i], class_match=[0.30, 0.32, 0.34][i]))
        runs.append(_run("cfg", 1.5, seed, fid=[49.0, 50.5, 52.0][i], class_match=[0.40, 0.42, 0.44][i]))
        runs.append(_run("cfg", 3.0, seed, fid=[55.0, 56.0, 57.0][i], class_match=[0.60, 0.62, 0.64][i]))
        runs.append(_run("dog", 1.5, seed, fid=[44.0, 45.0, 46.0][i], class_match=[0.41, 0.43, 0.45][i]))
        runs.append(_run("dog", 1.5, seed, interval=[500.0, 999.0], fid=[47.0, 48.0, 49.0][i],
                         class_match=[0.40, 0.41, 0.42][i]))
    return runs


def test_summary_comparisons_and_regime_checks() -> None:
    summary = analysis.summarize(_runs())
    cfg15 = analysis.find(summary, "ld0.1", "cfg", 1.5)
    assert cfg15["values"]["fid"] == [49.0, 50.5, 52.0] and cfg15["replicates"] == 3 and cfg15["seeds"] == [0, 1, 2]
    assert cfg15["fid"] == pytest.approx(50.5) and cfg15["fid_std"] == pytest.approx(1.5)  # ddof 1
    dog_int = analysis.find(summary, "ld0.1", "dog", 1.5, [500.0, 999.0])
    assert dog_int["fid"] == pytest.approx(48.0) and analysis.find(summary, "ld0.1", "dog", 3.0) is None

    cells = analysis.comparisons(summary, "ld0.1")
    dog15 = analysis.find(summary, "ld0.1", "dog", 1.5)
    # DoG vs CFG at 1.5 on FID: diff -5.5, pooled std sqrt((1 + 2.25) / 2) = 1.2748 -> resolved, DoG better
    c = analysis.find_comparison(cells, dog15, cfg15, "fid")
    assert c["diff"] == pytest.approx(-5.5) and c["pooled_std"] == pytest.approx((3.25 / 2) ** 0.5)
    assert c["resolved"] and c["better"] == "a"
    # class match 0.43 vs 0.42, stds 0.02: not resolved, no winner
    c = analysis.find_comparison(cells, dog15, cfg15, "class_match")
    assert not c["resolved"] and c["better"] is None
    # the interval row is compared with plain DoG: 48 vs 45 (stds 1): resolved, plain DoG better
    c = analysis.find_comparison(cells, dog_int, dog15, "fid")
    assert c["resolved"] and c["better"] == "b"
    # every setting is compared with the real floor
    real = analysis.find(summary, None, "real")
    assert analysis.find_comparison(cells, cfg15, real, "fid")["better"] == "b"

    d = analysis.diagnostics(summary, "ld0.1", num_classes=4)
    lc = d["learned_classes"]
    assert lc["chance"] == 0.25 and lc["real_ceiling"] == pytest.approx(0.92)
    assert lc["above_chance"]  # 0.32 - 0.25 = 0.07 > 2 * 0.02
    assert lc["fraction_of_ceiling"] == pytest.approx(0.07 / 0.67)
    assert lc["below_ceiling"]
    assert d["worse_than_floor"]["fid"]["worse"] and d["worse_than_floor"]["class_match"]["worse"]
    # CFG's best w on FID is 1.5 (50.5 vs 51.0 unguided, stds 1.5 and 1): not resolved
    assert d["cfg_improves"]["fid"]["w"] == 1.5 and not d["cfg_improves"]["fid"]["improves"]
    # on class match the best w is 3 (0.62 vs 0.32): resolved improvement
    assert d["cfg_improves"]["class_match"]["w"] == 3.0 and d["cfg_improves"]["class_match"]["improves"]


def test_below_chance_is_not_above_chance() -> None:
    runs = [_run("unguided", 1.0, s, class_match=v) for s, v in enumerate((0.10, 0.11, 0.12))]
    lc = analysis.diagnostics(analysis.summarize(runs), "ld0.1", num_classes=4)["learned_classes"]
    assert not lc["above_chance"] and lc["real_ceiling"] is None and lc["fraction_of_ceiling"] is None


def test_regime_reading_names_the_metric_family_cfg_improves() -> None:
    from domain_guidance.pipelines.demo.report import regime_reading

    cell = lambda improves: {"improves": improves}  # noqa: E731
    marginal = regime_reading({"fid": cell(True), "intra_fd_classifier": cell(False), "class_match": cell(True)})
    assert marginal.startswith("Regime: CFG measurably improves marginal quality (fid)")
    per_class = regime_reading({"fid": cell(False), "intra_fd_classifier": cell(True), "intra_fid": cell(False),
                                "class_match": cell(True)})
    assert "per-class quality only (intra_fd_classifier)" in per_class and "not on the marginal FID" in per_class
    # a rate (class match) going up is not quality
    assert regime_reading({"fid": cell(False), "class_match": cell(True)}).startswith(
        "Regime: CFG improves no quality metric")
