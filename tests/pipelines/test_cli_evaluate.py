"""`dog evaluate` and `dog sweep` end to end on tiny checkpoints with the real FID-Inception weights."""
import json

import numpy as np
import pytest

from domain_guidance.cli import main


@pytest.fixture(scope="module")
def setup(checkpoints):
    root = checkpoints
    rng = np.random.default_rng(0)
    np.savez(root / "ref.npz", arr_0=rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8))
    return root


@pytest.mark.slow
def test_sweep_then_evaluate(setup, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--model", str(setup / "ft"), "--guide", str(setup / "pre"), "--reference",
                 str(setup / "ref.npz"), "--methods", "unguided,cfg,dog", "--scales", "2", "--seeds", "0-3",
                 "--steps", "3", "--fd-method", "eigh", "--device", "cpu", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["w"]) for r in rows] == [("unguided", 1.0), ("cfg", 2.0), ("dog", 2.0)]
    assert all(np.isfinite(r["fid"]) and r["fid"] > 0 for r in rows)
    assert "| dog | 2 |" in (out / "table.md").read_text()
    assert (out / "sweep-fid.png").stat().st_size > 0
    # the sweep's DoG run scored again with `dog evaluate` gives the same number and records the protocol
    assert main(["evaluate", str(out / "dog-w2"), str(setup / "ref.npz"), "--fd-method", "eigh",
                 "--device", "cpu", "--out", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["metrics"]["fid"] == pytest.approx(rows[2]["fid"], rel=1e-9)
    gen = result["generation"]["settings"]
    assert gen["method"] == "dog" and gen["scale"] == 2.0 and gen["seeds"] == [0, 1, 2, 3] and gen["steps"] == "3"
    assert result["samples"]["num_images"] == 4 and result["protocol"]["inception"]["weights_sha256"]
    assert "fid" in capsys.readouterr().out


def test_evaluate_bad_input(setup, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty"), str(setup / "ref.npz"), "--device", "cpu"]) == 2
    assert "empty" in capsys.readouterr().err.lower()
    assert main(["evaluate", str(setup / "ref.npz"), str(setup / "ref.npz"), "--metrics", "is"]) == 2
    assert "unknown or no metrics" in capsys.readouterr().err
