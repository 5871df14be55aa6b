"""``dog demo --flow``: the flow-matching variant of the embedded demo (config, source checks, a tiny run)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from domain_guidance.cli import build_parser
from domain_guidance.cli.demo import config_from_args
from domain_guidance.core.models import DiT, dit_config
from domain_guidance.io.checkpoints import load_model, save_checkpoint
from domain_guidance.pipelines.demo.config import DemoConfig, flow, full
from domain_guidance.pipelines.demo.flow import flow_interval, matched_steps, sit_time_of_ddpm
from domain_guidance.pipelines.demo.run import ensure_source
from domain_guidance.pipelines.generate import load_samples

EPS_SOURCE = Path(__file__).resolve().parents[2] / "src" / "domain_guidance" / "assets" / "animal-source.safetensors"


def _demo(*argv: str) -> DemoConfig:
    return config_from_args(build_parser().parse_args(["demo", *argv]))


def _tiny_checkpoint(path: Path, prediction: str) -> Path:
    """A tiny untrained 16x16x1 DiT/SiT (6 classes + null) saved in our format."""
    torch.manual_seed(0)
    cfg = dit_config("T/2", input_size=16, in_channels=1, num_classes=6, hidden_size=32, depth=1, num_heads=2,
                     latent=False, vae=None, prediction=prediction)
    return save_checkpoint(path, DiT(cfg).state_dict(), cfg)


def test_sit_time_has_the_snr_of_the_ddpm_step():
    # DDPM linear schedule written out independently: alpha_bar_t = prod_{i <= t} (1 - beta_i)
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    ab = np.cumprod(1 - betas)
    for t in (0, 250, 500, 999):
        s, n = np.sqrt(ab[t]), np.sqrt(1 - ab[t])
        got = sit_time_of_ddpm(t)
        assert got == pytest.approx(s / (s + n), rel=1e-9)
        assert got / (1 - got) == pytest.approx(s / n, rel=1e-9)  # the linear path's SNR t / (1 - t)
    assert sit_time_of_ddpm(500) == pytest.approx(0.22507, abs=1e-5)  # hand value: 0.27892 / (0.27892 + 0.96031)
    assert flow_interval([500.0, 999.0]) == [0.0, 0.23]  # the noisy end starts where the ODE starts (t = 0)
    assert flow_interval([250.0, 500.0]) == [0.23, round(float(np.sqrt(ab[250]) / (np.sqrt(ab[250])
                                                                                      + np.sqrt(1 - ab[250]))), 2)]
    with pytest.raises(ValueError, match="timestep must be an original DDPM step 0..999, got 1000"):
        sit_time_of_ddpm(1000)


def test_flow_variant_matches_the_eps_demos_network_evaluations():
    eps, fl = _demo("--target", "animal"), _demo("--flow")  # the flow variant is the animal demo's
    assert (eps.prediction, eps.sampler, eps.steps, eps.out) == ("eps", "ddim", 25, "runs/demo-animal")
    assert (fl.prediction, fl.sampler, fl.steps, fl.out) == ("velocity", "ode-heun", 12, "runs/demo-flow")
    assert 2 * fl.steps == 24 and abs(2 * fl.steps - eps.steps) <= 1  # Heun: 2 evaluations per step vs DDIM's 1
    assert fl.dog_interval == [0.16, 0.78] and fl.source_preset == "animal-source-flow"
    assert fl.source.endswith(("animal-source-flow.safetensors", "runs/animal-source-flow"))
    # everything else is the eps demo's: the same report compares the same protocol
    for name in ("w", "samples", "seeds", "finetune_steps", "finetune_lr", "images_per_class", "target_classes",
                 "reference_images"):
        assert getattr(fl, name) == getattr(eps, name), name
    ff = _demo("--flow", "--full")
    assert (ff.out, ff.steps, ff.samples) == ("runs/demo-full-flow", 25, full().samples)
    assert _demo("--flow", "--out", "x", "--steps", "7").out == "x"
    assert matched_steps(25, "ode-euler") == 25 and matched_steps(50) == 25


def test_flow_variant_refuses_eps_samplers_and_out_of_range_intervals():
    with pytest.raises(ValueError, match="sampler 'ddim' does not integrate 'velocity' models"):
        _demo("--flow", "--sampler", "ddim")
    with pytest.raises(ValueError, match="sampler 'ode-heun' does not integrate 'eps' models"):
        _demo("--sampler", "ode-heun")
    with pytest.raises(ValueError, match=r"dog_interval .* <= 1 \(SiT time, 0 = noise\), got \[500.0, 999.0\]"):
        _demo("--flow", "--dog-interval", "500,999")
    with pytest.raises(ValueError, match="prediction must be 'eps' \\(DiT\\) or 'velocity'"):
        DemoConfig(prediction="score")
    assert _demo("--flow", "--dog-interval", "none").dog_interval is None


def test_missing_flow_source_says_how_to_pretrain(tmp_path: Path):
    cfg = flow(DemoConfig(out=str(tmp_path / "demo"), target="animal"))
    cfg.source = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors \(--source\) does not exist.*--pretrain to "
                                                r"pre-train the 'animal-source-flow' preset"):
        ensure_source(cfg, tmp_path / "demo")


def test_source_of_the_other_prediction_is_refused(tmp_path: Path):
    cfg = flow(DemoConfig(out=str(tmp_path / "demo"), target="animal"))
    cfg.source = str(EPS_SOURCE)  # the shipped DiT (eps) source
    with pytest.raises(ValueError, match="predicts 'eps', but --flow \\(flow matching\\) needs a 'velocity' source"):
        ensure_source(cfg, tmp_path / "demo")
    sit = _tiny_checkpoint(tmp_path / "sit.safetensors", "velocity")
    eps_cfg = DemoConfig(out=str(tmp_path / "demo"), target="animal", source=str(sit))
    with pytest.raises(ValueError, match="predicts 'velocity', but the eps \\(DiT\\) demo needs a 'eps' source"):
        ensure_source(eps_cfg, tmp_path / "demo")
    cfg.source = str(sit)
    assert ensure_source(cfg, tmp_path / "demo")["prediction"] == "velocity"


def test_a_dit_eps_guide_for_a_flow_fine_tune_is_refused(tmp_path: Path):
    from domain_guidance.pipelines.generate import GenerationSettings, load_models
    from domain_guidance.pipelines.generate.models import build_denoiser

    sit = _tiny_checkpoint(tmp_path / "sit.safetensors", "velocity")
    dit = _tiny_checkpoint(tmp_path / "dit.safetensors", "eps")
    models = load_models(str(sit), guide=str(dit))
    settings = GenerationSettings(method="dog", scale=2.0, sampler="ode-heun", steps="4", seeds=[0], labels=[0])
    with pytest.raises(ValueError, match="prediction: fine-tuned 'velocity' vs guide 'eps'.*flow-matching \\(SiT, "
                                         "velocity\\) model cannot be guided by a diffusion \\(DiT, eps\\) model"):
        build_denoiser(settings, models)


def tiny_flow_config(out: Path) -> DemoConfig:
    """The eps demo's tiny test sizes under --flow: a T/2 SiT pre-trained from scratch for 30 steps, no FID."""
    cfg = flow(DemoConfig(out=str(out), target="animal", pretrain=True, pretrain_steps=30, model="T/2",
                          model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}, finetune_steps=10,
                          finetune_batch=8, images_per_class=5, w=[2.0], samples=6, seeds=[0, 1], steps=5,
                          batch_size=8, reference_images=8, classifier_epochs=0.2, kid_subsets=7, fid=False,
                          progress=False))
    cfg.out, cfg.pretrain_steps = str(out), 30  # flow() sets the flow source's own pre-training length
    return cfg.validate()


@pytest.mark.slow
def test_flow_demo_end_to_end(tmp_path: Path):
    from domain_guidance.pipelines.demo.run import run_demo

    cfg = tiny_flow_config(tmp_path)
    assert (cfg.sampler, cfg.steps) == ("ode-heun", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = run_demo(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    src = saved["source"]
    assert src["trained_now"] and src["steps"] == 30 and src["prediction"] == "velocity"
    # the source and the fine-tune are flow-matching models, the fine-tune trained from that source
    assert load_model(src["checkpoint"]).config.prediction == "velocity"
    ft = load_model(saved["finetunes"]["ld0.1"]["checkpoint"])
    assert ft.config.prediction == "velocity" and ft.config.num_classes == 4
    train_cfg = json.loads((tmp_path / "finetune-ld0.1" / "train_config.json").read_text())
    assert Path(train_cfg["base"]).resolve() == Path(src["checkpoint"]).resolve()
    grid = [("unguided", 1.0, None), ("cfg", 2.0, None), ("dog", 2.0, None), ("dog", 2.0, [0.16, 0.78])]
    assert [(r["method"], r["w"], r["interval"]) for r in saved["runs"]] == grid * 2
    images = {}
    for r in saved["runs"]:
        settings = json.loads((Path(r["samples"]).parent / "settings.json").read_text())
        s = settings.get("settings", settings)
        assert (s["sampler"], str(s["steps"])) == ("ode-heun", "2"), s
        x, labels = load_samples(r["samples"])
        assert x.shape == (6, 16, 16, 1) and x.dtype == np.uint8 and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 3]
        images[(r["method"], r["interval"] is not None, r["seed"])] = x
    for seed in (0, 1):  # the guidance changes the samples (same seeds): the methods are not one another
        assert not np.array_equal(images[("unguided", False, seed)], images[("cfg", False, seed)])
        assert not np.array_equal(images[("cfg", False, seed)], images[("dog", False, seed)])
        assert not np.array_equal(images[("dog", False, seed)], images[("dog", True, seed)])
    report = (tmp_path / "report.md").read_text()
    assert "ODE-HEUN with 2 steps" in report and "SiT time (0 = noise) t in [0.16, 0.78]" in report
    assert results["summary"] == saved["summary"]
