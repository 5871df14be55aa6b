"""Every setting is validated, against the sampler's actual grid, before any model loads and before anything is
written; a refused run leaves no trace that blocks the corrected rerun; non-finite samples stop the run."""
from __future__ import annotations

import json

import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.cli.sample import key_value
from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.sampling import get_sampler, sample
from domain_guidance.io.checkpoints import save_model
from domain_guidance.io.images import to_uint8
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.generate import GenerationSettings, Models, generate, sample_images
from tests.core.helpers import tiny_dit

MISSING = "/nonexistent/model-validate-first"  # a check that runs before loading names its option, not this


@pytest.fixture(scope="module")
def sit(tmp_path_factory):
    """A tiny 8x8x1 velocity (flow-matching) model on disk."""
    root = tmp_path_factory.mktemp("sit")
    net = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False, prediction="velocity", std=0.1)
    save_model(root / "ft", net, net.config)
    return root / "ft"


def _sample(model, out, *extra):
    return main(["sample", "--model", str(model), "--method", "unguided", "--seeds", "0-1", "--steps", "6",
                 "--out", str(out), "--no-progress", "--device", "cpu", *extra])


# ---- family 7: numbers in --sampler-option are numbers ---------------------------------------------------------

@pytest.mark.parametrize("text, value", [("rtol=1e-5", 1e-5), ("last_step_size=4e-2", 0.04), ("atol=3", 3),
                                         ("diffusion_norm=0.5", 0.5), ("last_step=null", None),
                                         ("diffusion_form=SBDM", "SBDM"), ("last_step=Mean", "Mean")])
def test_sampler_option_values_parse_as_numbers_first(text, value):
    key, parsed = key_value(text)
    assert parsed == value and type(parsed) is type(value)  # YAML 1.1 alone reads 1e-5 as the string '1e-5'


def test_the_help_example_rtol_1e5_samples(sit, tmp_path):
    assert _sample(sit, tmp_path / "out", "--sampler", "ode-dopri5", "--sampler-option", "rtol=1e-5") == 0
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["settings"]["options"] == {"rtol": 1e-5}


@pytest.mark.parametrize("option, message", [
    ("last_step_size=abc", "--sampler-option: last_step_size='abc': expected a number (default 0.04), got str"),
    ("diffusion_form=3", "--sampler-option: diffusion_form=3: expected a name (default 'sigma'), got int"),
    ("diffusion_norm=-1", "--sampler-option: diffusion_norm: expected a number >= 0, got -1"),
    ("diffusion_form=sigmaa", "--sampler-option: diffusion_form: unknown 'sigmaa'"),
    ("last_step_size=4e-2", None),  # a number: accepted, the run stops at the missing model
])
def test_sampler_option_values_are_checked_before_the_model_loads(tmp_path, capsys, option, message):
    code = _sample(MISSING, tmp_path / "out", "--sampler", "sde-euler", "--sampler-option", option)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert (message in err) if message else (MISSING in err), err
    assert not (tmp_path / "out").exists()


# ---- family 2: refused before work, no trace; the corrected rerun succeeds ----------------------------------------

@pytest.mark.parametrize("bad, good", [
    (["--sampler", "sde-euler", "--sampler-option", "diffusion_form=sigmaa"],
     ["--sampler", "sde-euler", "--sampler-option", "diffusion_form=sigma"]),
    (["--sampler", "ode-dopri5", "--sampler-option", "rtol=-1"], ["--sampler", "ode-dopri5", "--sampler-option",
                                                                  "rtol=1e-3"]),
    (["--sampler", "sde-euler", "--sampler-option", "diffusion_norm=-1"],
     ["--sampler", "sde-euler", "--sampler-option", "diffusion_norm=0.5"]),
    (["--sampler", "ode-euler", "--method", "cfg", "--channels", "4"],
     ["--sampler", "ode-euler", "--method", "cfg", "--channels", "1"]),
])
def test_a_refused_run_leaves_nothing_and_the_corrected_rerun_succeeds(sit, tmp_path, capsys, bad, good):
    out = tmp_path / "out"
    assert _sample(sit, out, *bad) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not (out / "settings.json").exists()
    assert _sample(sit, out, *good) == 0
    assert json.loads((out / "settings.json").read_text())["status"] == "complete"


def test_channels_beyond_the_model_are_refused_by_name(sit, tmp_path, capsys):
    assert _sample(sit, tmp_path / "out", "--sampler", "ode-euler", "--method", "cfg", "--channels", "4") == 2
    assert "channels: 4 guided channels asked for, but the model has 1; expected 1..1" in capsys.readouterr().err


def _visited(sampler: str, steps: int, **options) -> list[float]:
    """The network times a sampler really evaluates (recorded by the denoiser)."""
    seen: list[float] = []
    net = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False, prediction="velocity")
    den = Denoiser(net, net.config)

    def recording(x, t, y):
        seen.append(float(t[0]))
        return den(x, t, y)

    recording.prediction, recording.learn_sigma = "velocity", net.config.learn_sigma
    sample(recording, torch.randn(1, 1, 8, 8), torch.tensor([0]), sampler=sampler, steps=steps, **options)
    return seen


@pytest.mark.parametrize("options", [{"last_step_size": 0.5}, {"last_step": None}, {"last_step": "Tweedie"},
                                     {"diffusion_form": "SBDM", "sample_eps": 0.1, "last_step_size": 0.2}])
def test_the_declared_grid_is_the_grid_the_sde_visits(options):
    declared = get_sampler("sde-euler").timesteps("6", **options)
    assert sorted(set(declared)) == pytest.approx(sorted(set(_visited("sde-euler", 6, **options))))


def test_an_interval_no_step_of_the_actual_grid_falls_in_is_refused():
    def settings(interval, **options):
        return GenerationSettings(method="dog", sampler="sde-euler", steps="6", interval=interval, options=options)

    assert settings((0.9, 0.97)).interval == (0.9, 0.97)  # the default grid ends at 0.96
    with pytest.raises(ValueError, match=r"interval: no sampling step falls in \(0.9, 0.97\).*visit timesteps 0..0.5"):
        settings((0.9, 0.97), last_step_size=0.5)
    with pytest.raises(ValueError, match="no sampling step falls in"):  # without a last step t = 1 is never visited
        settings((0.95, 1.0), last_step=None)


def test_cli_refuses_the_interval_before_loading(tmp_path, capsys):
    assert _sample(MISSING, tmp_path / "out", "--method", "dog", "--sampler", "sde-euler", "--sampler-option",
                   "last_step_size=0.5", "--interval", "0.9,0.97") == 2
    assert "--interval: no sampling step falls in (0.9, 0.97)" in capsys.readouterr().err


# ---- non-finite samples stop the run ----------------------------------------------------------------------------

def _nan_models() -> Models:
    net = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False, prediction="velocity")
    with torch.no_grad():
        net.final_layer.linear.bias.fill_(float("nan"))  # a diverged network: every output NaN
    return Models(Denoiser(net, net.config), identity={"model": {"sha256": "nan"}})


def test_non_finite_samples_are_an_error_not_black_images(tmp_path):
    settings = GenerationSettings(method="unguided", sampler="ode-euler", steps="4", seeds=[0, 1], labels=[0, 1])
    with pytest.raises(ValueError, match=r"sampling gave non-finite values \(NaN or inf\) for 2 of 2 samples"):
        sample_images(settings, _nan_models())
    with pytest.raises(ValueError, match="non-finite"):
        to_uint8(torch.tensor([[[[float("nan"), 0.0]]]]))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="non-finite"):
        generate(settings, _nan_models(), out, progress=False)
    assert not (out / "samples.npz").exists() and not list(out.glob("shards/*.npz"))
    net = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False, prediction="velocity")
    good = Models(Denoiser(net, net.config), identity={"model": {"sha256": "good"}})
    # the failed run's settings.json (another model) holds no image: it does not block the corrected rerun
    assert generate(settings, good, out, progress=False)["status"] == "complete"


# ---- dog demo and dog sweep: refused before the fine-tune / the sampling -------------------------------------------

def test_demo_interval_no_step_falls_in_is_refused_by_the_config(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"dog_interval: no step of ddim with 25 steps falls in \[0.1, 0.2\]"):
        DemoConfig(dog_interval=[0.1, 0.2])
    assert DemoConfig(dog_interval=[0.0, 0.2]).dog_interval == [0.0, 0.2]  # DDIM's last step is t = 0
    code = main(["demo", "--dog-interval", "0.1,0.2", "--out", str(tmp_path / "demo"), "--source", MISSING])
    assert code == 2 and "--dog-interval: no step of ddim" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "bogus"], "metrics: unknown or none ['bogus']"),
    (["--reference", "/nonexistent/reference"], "reference /nonexistent/reference does not exist"),
    (["--steps", "1"], "--steps: steps '1' gives 1 sampling step"),
])
def test_sweep_refuses_before_sampling(checkpoints, tmp_path, capsys, extra, message):
    out = tmp_path / "sweep"
    code = main(["sweep", "--model", str(checkpoints / "ft"), "--guide", str(checkpoints / "pre"), "--reference",
                 str(checkpoints / "ft"), "--seeds", "0-1", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not list(out.rglob("settings.json")) and not list(out.rglob("*.npz"))
