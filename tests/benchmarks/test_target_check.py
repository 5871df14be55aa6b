"""benchmarks/target_check.py's verdicts: the criteria (a)-(c) and DoG vs CFG, on hand-made replicate summaries."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def tc():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("target_check", BENCH / "target_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _group(**means_stds: tuple[float, float]) -> dict[str, float]:
    out = {}
    for m, (mean, std) in means_stds.items():
        out[m], out[f"{m}_std"] = mean, std
    return out


def _set(fid: float, cm: float, blue: float, std: float = 1.0) -> dict[str, float]:
    return _group(fid=(fid, std), kid=(fid / 1000, std / 1000), fd_judge=(fid * 10, std * 10),
                  kid_judge=(fid * 1e4, std * 1e4), class_match=(cm, 0.02), blue_rate=(blue, 0.01))


def test_criteria_and_dog_vs_cfg_signs(tc) -> None:
    groups = {"floor": _set(13.0, 1.0, 1.0), "unguided": _set(85.0, 0.69, 0.93),
              "cfg-w1.5": _set(80.0, 0.80, 0.92), "dog-w1.5": _set(77.0, 0.79, 0.99)}
    c = tc.criteria(groups)
    assert c["a"]["met"] and c["b"]["met"] and c["c"]["met"] and c["all_met"]
    assert c["c"]["z_unguided_vs_cfg"]["cfg-w1.5"]["fid"] == pytest.approx(5.0)  # (85 - 80) / 1
    z = tc.dog_vs_cfg(groups, [1.5])["w1.5"]
    assert z["fid"] == pytest.approx(3.0)  # DoG lower FID: positive
    assert z["blue_rate"] == pytest.approx(0.07 / 0.01)  # DoG higher in-domain rate: positive
    assert z["class_match"] == pytest.approx(-0.01 / 0.02)  # DoG lower class match: negative
    # (a) fails below a class match of 0.5; (c) needs a resolved gain (z > 2), not just a lower mean
    groups["unguided"] = _set(81.0, 0.46, 0.93, std=2.0)
    c = tc.criteria(groups)
    assert not c["a"]["met"] and not c["c"]["met"] and not c["all_met"]
    assert c["c"]["z_unguided_vs_cfg"]["cfg-w1.5"]["fid"] == pytest.approx(1.0 / math.sqrt(2.5))


def test_a_check_folder_is_reused_only_for_the_same_identity(tc, tmp_path: Path) -> None:
    from source_check import open_check_cache

    path, cache = open_check_cache(tmp_path / "check", {"model_sha256": "a", "n": 100})
    cache["unguided/0"] = {"fid": 1.0}
    path.write_text(__import__("json").dumps(cache))
    _, again = open_check_cache(tmp_path / "check", {"model_sha256": "a", "n": 100})
    assert again["unguided/0"] == {"fid": 1.0}
    with pytest.raises(ValueError, match="holds a check of .*'model_sha256': 'a'.* use another --out"):
        open_check_cache(tmp_path / "check", {"model_sha256": "b", "n": 100})
