"""`dog sweep` into a used folder: rows are added, not dropped; samples made another way are refused.

The metric is replaced by a cheap deterministic function of the samples (a sweep test of row
bookkeeping, not of FID: the real-Inception sweep is tested in test_cli_evaluate.py).
"""
import json

import numpy as np
import pytest

from domain_guidance.cli import main
from domain_guidance.pipelines import sweep as sweep_module
from domain_guidance.pipelines.sweep import merge_rows


def _fake_evaluate(samples, reference, metrics, output=None, **kw):
    with np.load(samples) as z:
        value = float(z["arr_0"].astype(np.float64).mean())  # depends on the images actually scored
    result = {"metrics": {"fid": value}}
    if output is not None:
        output.write_text(json.dumps(result))
    return result


def _sweep(checkpoints, out, *extra):
    methods = extra[extra.index("--methods") + 1] if "--methods" in extra else "unguided,cfg,dog"
    guide = ["--guide", str(checkpoints / "pre")] if "dog" in methods.split(",") else []  # --guide is DoG's only
    return main(["sweep", "--model", str(checkpoints / "ft"), *guide, "--reference",
                 str(checkpoints / "ref-fake.npz"), "--seeds", "0-2", "--steps", "3", "--device", "cpu",
                 "--out", str(out), *extra])


def test_rerun_adds_rows_and_refuses_other_steps(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep_module, "evaluate", _fake_evaluate)
    out = tmp_path / "sweep"
    assert _sweep(checkpoints, out, "--methods", "unguided,dog", "--scales", "2") == 0
    first = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["w"]) for r in first] == [("unguided", 1.0), ("dog", 2.0)]
    # a second sweep with another w into the same folder keeps the earlier rows
    assert _sweep(checkpoints, out, "--methods", "dog", "--scales", "3") == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["w"]) for r in rows] == [("unguided", 1.0), ("dog", 2.0), ("dog", 3.0)]
    assert rows[:2] == first
    assert "| dog | 3 |" in (out / "table.md").read_text() and "| dog | 2 |" in (out / "table.md").read_text()
    # other steps, even for a new w: 5-step rows must not join a table of 3-step ones (README: refused)
    capsys.readouterr()
    for scale in ("2", "4"):
        assert _sweep(checkpoints, out, "--methods", "dog", "--scales", scale, "--steps", "5") == 2
        err = capsys.readouterr().err
        assert "holds rows scored another way (steps: '3' -> '5')" in err and "--overwrite" in err
    assert json.loads((out / "results.json").read_text())["rows"] == rows  # nothing lost
    assert not (out / "dog-w4").exists()  # refused before any sample was drawn
    # --overwrite replaces the sweep: its earlier rows are dropped, the run redone with 5 steps
    assert _sweep(checkpoints, out, "--methods", "dog", "--scales", "2", "--steps", "5", "--overwrite") == 0
    new = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["w"]) for r in new["rows"]] == [("dog", 2.0)] and new["config"]["steps"] == "5"
    assert new["rows"][0]["settings_key"] != rows[1]["settings_key"]
    assert json.loads((out / "dog-w2" / "settings.json").read_text())["settings"]["steps"] == "5"


def test_sweep_rerun_with_another_model_or_without_the_guide_is_refused_naming_the_field(checkpoints, tmp_path,
                                                                                        monkeypatch, capsys):
    """Regression: a rerun with another --model, or without --guide, merged its rows into the old table."""
    monkeypatch.setattr(sweep_module, "evaluate", _fake_evaluate)
    out = tmp_path / "sweep"
    assert _sweep(checkpoints, out, "--methods", "unguided,dog", "--scales", "2") == 0
    before = (out / "results.json").read_text()
    capsys.readouterr()
    assert _sweep(checkpoints, out, "--methods", "cfg", "--scales", "3") == 2  # no --guide: the DoG rows had one
    assert f"rows scored another way (guide: '{checkpoints / 'pre'}' -> None)" in capsys.readouterr().err
    assert main(["sweep", "--model", str(checkpoints / "pre"), "--reference", str(checkpoints / "ref-fake.npz"),
                 "--methods", "unguided", "--seeds", "0-2", "--steps", "3", "--device", "cpu", "--out", str(out)]) == 2
    assert f"model: '{checkpoints / 'ft'}' -> '{checkpoints / 'pre'}'" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before and not (out / "cfg-w3").exists()


def test_rows_scored_against_another_reference_are_refused(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep_module, "evaluate", _fake_evaluate)
    out = tmp_path / "sweep"
    assert _sweep(checkpoints, out, "--methods", "unguided") == 0
    np.savez(tmp_path / "other.npz", arr_0=np.ones((3, 8, 8, 1), dtype=np.uint8))  # a reference that exists
    assert main(["sweep", "--model", str(checkpoints / "ft"), "--reference", str(tmp_path / "other.npz"),
                 "--methods", "unguided", "--seeds", "0-2", "--steps", "3", "--device", "cpu", "--out", str(out)]) == 2
    assert "rows scored another way (reference:" in capsys.readouterr().err


def test_merge_rows_replaces_the_same_method_and_w():
    old = [{"method": "dog", "w": 2.0, "fid": 1.0}, {"method": "unguided", "w": 1.0, "fid": 5.0}]
    new = [{"method": "dog", "w": 2.0, "fid": 9.0}, {"method": "cfg", "w": 2.0, "fid": 3.0}]
    assert merge_rows(old, new) == [{"method": "unguided", "w": 1.0, "fid": 5.0}, {"method": "cfg", "w": 2.0, "fid": 3.0},
                                    {"method": "dog", "w": 2.0, "fid": 9.0}]


@pytest.fixture(autouse=True)
def _fake_reference(checkpoints):
    np.savez(checkpoints / "ref-fake.npz", arr_0=np.zeros((3, 8, 8, 1), dtype=np.uint8))


def test_sweep_raw_sit_weights_with_a_flow_sampler(tmp_path, monkeypatch, tiny_vae_dir):
    """`dog sweep --prediction velocity --sampler ode-heun` on SiT weights in the official raw layout."""
    import torch

    from domain_guidance.core.models import DiT, dit_config
    from domain_guidance.io.checkpoints import retarget

    monkeypatch.setattr(sweep_module, "evaluate", _fake_evaluate)
    cfg = dit_config("SiT-T/2", input_size=8, num_classes=10)  # 8x8x4 latents, as a raw file is read
    torch.manual_seed(3)
    base = DiT(cfg).eval()
    ft, _ = retarget(base, cfg, num_classes=3, seed=5)
    torch.save(base.state_dict(), tmp_path / "base.pt")
    torch.save(ft.state_dict(), tmp_path / "ft.pt")
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((3, 16, 16, 3), dtype=np.uint8))
    args = ["sweep", "--model", str(tmp_path / "ft.pt"), "--guide", str(tmp_path / "base.pt"), "--reference",
            str(tmp_path / "ref.npz"), "--methods", "dog", "--scales", "2", "--seeds", "0-2", "--steps", "3",
            "--sampler", "ode-heun", "--vae", str(tiny_vae_dir), "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(args) == 2  # read as eps (a raw file cannot say), the flow sampler refuses it
    assert main(args + ["--prediction", "velocity"]) == 0
    record = json.loads((tmp_path / "out" / "dog-w2" / "settings.json").read_text())
    assert record["settings"]["sampler"] == "ode-heun" and record["models"]["model"]["config"]["prediction"] == "velocity"


def test_a_method_the_models_cannot_draw_is_said_and_autoguidance_takes_its_guide(checkpoints, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.setattr(sweep_module, "evaluate", _fake_evaluate)
    out = tmp_path / "sweep"
    # autoguidance without its guide: skipped with the reason printed and recorded, the other rows drawn
    assert _sweep(checkpoints, out, "--methods", "unguided,autoguidance", "--scales", "2") == 0
    said = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["w"]) for r in result["rows"]] == [("unguided", 1.0)]
    assert "sweep: skipping autoguidance:" in said and "--autoguide" in said
    assert "--autoguide" in result["skipped"]["autoguidance"]
    # only methods that cannot be drawn: an error naming why, nothing written
    assert _sweep(checkpoints, tmp_path / "none", "--methods", "autoguidance") == 2
    assert "none of the methods can be drawn" in capsys.readouterr().err
    # with --autoguide (here the fine-tune itself, so guidance cancels: w * (c - c) + c) it is drawn
    assert _sweep(checkpoints, out, "--methods", "autoguidance", "--scales", "2",
                  "--autoguide", str(checkpoints / "ft")) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["w"]) for r in rows] == [("unguided", 1.0), ("autoguidance", 2.0)]
    with np.load(out / "unguided-w1" / "samples.npz") as a, np.load(out / "autoguidance-w2" / "samples.npz") as b:
        assert np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int)).max() <= 1  # uint8 rounding only
