"""run_toy on the default scenario (reduced sizes): files, metrics recomputed from samples, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.pipelines.toy.metrics import METRICS, sample_metrics
from domain_guidance.pipelines.toy.run import run_toy, sample_key, w_key
from domain_guidance.pipelines.toy.config import ToyConfig
from domain_guidance.pipelines.toy.scenario import build_scenario

SMALL = dict(seeds=(0, 1), ws=(1.0, 3.0), samples_per_class=300, steps=50, pretrain_steps=400,
             finetune_steps=150, figure_w=3.0, sw_projections=64)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    config = ToyConfig(**SMALL)  # the default scenario; only the sizes are reduced (run_toy uses 1 thread)
    run_toy(config, out, log=lambda s: None)
    metrics = json.loads((out / "metrics.json").read_text())
    with np.load(out / "samples.npz") as f:
        samples = {k: f[k] for k in f.files}
    return out, config, metrics, samples


def ood_by_hand(x: np.ndarray, config: ToyConfig) -> float:
    """Out-of-region share written independently of the package."""
    return float(np.mean(np.hypot(x[:, 0] - config.region_center[0], x[:, 1] - config.region_center[1])
                         > config.region_radius))


def test_writes_every_output_atomically(run):
    out, config, metrics, samples = run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "metrics.json", "samples.npz", "toy_exact.png", "toy_learned.png"]
    for track in ("exact", "learned"):
        assert (out / f"toy_{track}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ToyConfig.load(out / "config.json") == config
    assert set(metrics["tracks"]) == {"exact", "learned"}
    assert len(samples) == 1 + 2 * 2 * 3  # labels + tracks x seeds x (unguided, cfg@3, dog@3)


def test_reported_metrics_are_recomputed_from_the_saved_samples(run):
    out, config, metrics, samples = run
    scenario = build_scenario(config)
    labels = samples["labels"]
    assert np.array_equal(labels, np.repeat(np.arange(2), config.samples_per_class))
    for track, res in metrics["tracks"].items():
        for method in ("cfg", "dog"):
            for w in config.ws:
                summ = res["metrics"][method][w_key(w)]
                for i, seed in enumerate(config.seeds):
                    x = samples[sample_key(track, method, w, seed)]
                    again = sample_metrics(scenario, x, labels, near_radius=config.near_radius,
                                           sw_projections=config.sw_projections, metric_seed=config.metric_seed)
                    for name in METRICS:
                        assert summ[name]["per_seed"][i] == pytest.approx(again[name], rel=1e-12, abs=1e-12)
                    assert summ["ood_rate"]["per_seed"][i] == pytest.approx(ood_by_hand(x, config), abs=1e-12)
                for name in METRICS:
                    vals = summ[name]["per_seed"]
                    assert summ[name]["mean"] == pytest.approx(np.mean(vals))
                    assert summ[name]["std"] == pytest.approx(np.std(vals, ddof=1))


@pytest.mark.parametrize("track", ["exact", "learned"])
def test_direction_of_the_effect_matches_a_recomputation(run, track):
    """Whatever the run reports for DoG vs CFG at w = 3, the saved samples say the same."""
    out, config, metrics, samples = run
    rep = metrics["tracks"][track]["metrics"]
    reported = np.sign(rep["dog"]["3"]["ood_rate"]["mean"] - rep["cfg"]["3"]["ood_rate"]["mean"])
    recomputed = np.sign(np.mean([ood_by_hand(samples[sample_key(track, "dog", 3.0, s)], config)
                                  - ood_by_hand(samples[sample_key(track, "cfg", 3.0, s)], config)
                                  for s in config.seeds]))
    assert reported == recomputed
    # w = 1 is the same unguided sample set for both methods
    assert rep["dog"]["1"] == rep["cfg"]["1"]


def test_metrics_follow_the_samples_not_constants(run):
    out, config, metrics, samples = run
    scenario = build_scenario(config)
    labels = torch.as_tensor(samples["labels"])
    true = torch.cat([law.sample(config.samples_per_class, torch.Generator().manual_seed(k))[0]
                      for k, law in enumerate(scenario.target_classes)])
    good = sample_metrics(scenario, true, labels)
    far = sample_metrics(scenario, true + torch.tensor([3.0, 0.0], dtype=torch.float64), labels)
    assert good["ood_rate"] < 0.02 and good["precision"] > 0.97 and good["sw2"] < 0.15
    assert far["ood_rate"] == 1.0 and far["precision"] == 0.0
    assert far["sw2"] == pytest.approx(3.0 / np.sqrt(2.0), rel=0.05)  # a shift by 3: E[cos^2] = 1/2
    assert far["loglik"] < good["loglik"] - 100


def test_cli_writes_results_and_reads_toml(tmp_path, capsys):
    cfg_file = tmp_path / "toy.toml"
    cfg_file.write_text("samples_per_class = 40\nsteps = 10\nws = [1.0, 2.0]\n")
    out = tmp_path / "out"
    rc = main(["toy", "--track", "exact", "--seeds", "0,", "--config", str(cfg_file), "--out", str(out), "--quiet"])
    assert rc == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["samples_per_class"] == 40 and saved["ws"] == [1.0, 2.0] and saved["seeds"] == [0]
    assert saved["tracks"] == ["exact"]
    assert "ood_rate" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"no_such_key": 1}')
    assert main(["toy", "--config", str(bad), "--out", str(out)]) == 2
    assert "no_such_key" in capsys.readouterr().err
