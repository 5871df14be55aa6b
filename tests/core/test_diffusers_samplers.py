"""diffusers' schedulers as registry samplers (core.diffusers_samplers): each equals diffusers' own DiTPipeline loop
on the same tiny model to float tolerance (DoG by hand, the variance half dropped, the interval honoured); per-sample
noise of the stochastic ones; batch and seed-order invariance; the settings key; option and model-kind refusals."""
from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.diffusers_samplers import SCHEDULERS, make_scheduler
from domain_guidance.core.diffusion import linear_betas
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.models import dit_config
from domain_guidance.core.sampling import SAMPLERS, check_prediction, sample_from_seeds
from domain_guidance.pipelines.generate.settings import GenerationSettings
from tests.core.helpers import tiny_dit

SHAPE = (3, 8, 8)
W = 2.0


def _models():
    pre = tiny_dit(num_classes=10, seed=1, in_channels=3, latent=False)  # learn_sigma: 6 output channels
    ft = tiny_dit(num_classes=3, seed=2, in_channels=3, latent=False)
    return pre, ft


def _direct(name: str, config: dict, step_kwargs: dict, pre, ft, seeds, labels, steps, interval=None):
    """diffusers' DiTPipeline loop, written against the scheduler class and the two raw networks."""
    scheduler = getattr(diffusers, SCHEDULERS[name])(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                                                     beta_schedule="linear", **config)
    scheduler.set_timesteps(steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = torch.stack([torch.randn(SHAPE, generator=g) for g in gens]) * scheduler.init_noise_sigma  # (N, 3, 8, 8)
    null = torch.full_like(labels, pre.config.null_label)
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        tt = t.expand(len(x))
        with torch.no_grad():
            cond = ft(x_in, tt, labels)[:, :3]  # learned sigma: the variance half dropped, as DiTPipeline
            uncond = pre(x_in, tt, null)[:, :3]
        eps = uncond + W * (cond - uncond)
        if interval is not None and not interval[0] <= float(t) <= interval[1]:
            eps = cond
        extra = {k: v for k, v in step_kwargs.items() if k != "generator"}
        if "generator" in step_kwargs:  # diffusers' per-sample generators: a list, one per batch row
            extra["generator"] = gens
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x


CASES = [("dpm-solver++", {}), ("dpm-solver++", {"order": 3, "use_karras_sigmas": True}),
         ("dpm-solver++", {"algorithm_type": "sde-dpmsolver++"}), ("unipc", {}), ("deis", {"order": 3}),
         ("euler", {}), ("euler", {"s_churn": 1.0}), ("heun", {"timestep_spacing": "trailing"})]


@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_equals_a_direct_diffusers_loop(name, options):
    pre, ft = _models()
    g = build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=W)
    seeds, labels = [3, 11], torch.tensor([0, 2])
    ours = sample_from_seeds(g, seeds, labels, SHAPE, sampler=name, steps=5, **options)
    config = {{"order": "solver_order"}.get(k, k): v for k, v in options.items() if k != "s_churn"}
    step = {"s_churn": options["s_churn"], "generator": True} if "s_churn" in options else {}
    if options.get("algorithm_type", "").startswith("sde"):
        step = {"generator": True}
    ref = _direct(name, config, step, pre, ft, seeds, labels, 5)
    scale = ref.abs().max()
    assert torch.allclose(ours, ref, atol=1e-5 * float(scale), rtol=0), (name, float((ours - ref).abs().max()))


def test_guidance_interval_is_honoured():
    pre, ft = _models()
    seeds, labels, interval = [4, 9], torch.tensor([1, 2]), (0.0, 500.0)
    g = build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=W, interval=interval)
    ours = sample_from_seeds(g, seeds, labels, SHAPE, sampler="dpm-solver++", steps=6)
    ref = _direct("dpm-solver++", {}, {}, pre, ft, seeds, labels, 6, interval=interval)
    everywhere = _direct("dpm-solver++", {}, {}, pre, ft, seeds, labels, 6)
    assert torch.allclose(ours, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)
    assert not torch.allclose(ours, everywhere, atol=1e-3 * float(ref.abs().max()), rtol=0)  # the interval mattered


def test_configured_from_the_models_own_schedule():
    for name in SCHEDULERS:
        scheduler = make_scheduler(name, 10)
        assert np.allclose(scheduler.betas.double().numpy(), linear_betas(1000), rtol=1e-6, atol=0), name
        assert scheduler.config.prediction_type == "epsilon"


@pytest.mark.parametrize("name, options", [("euler", {"s_churn": 2.0}),
                                           ("dpm-solver++", {"algorithm_type": "sde-dpmsolver++"}), ("unipc", {})])
def test_batch_size_and_seed_order_invariant(name, options):
    """Stochastic steps draw from each sample's own generator: seed s gives one image whatever its batch."""
    pre, ft = _models()
    g = build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=W)
    label_of = {1: 0, 3: 1, 5: 2, 7: 0}
    kw = dict(shape=SHAPE, sampler=name, steps=6, **options)
    whole = sample_from_seeds(g, [1, 3, 5, 7], torch.tensor([label_of[s] for s in (1, 3, 5, 7)]), **kw)
    shuffled = sample_from_seeds(g, [7, 5, 1], torch.tensor([label_of[s] for s in (7, 5, 1)]), **kw)
    single = sample_from_seeds(g, [3], torch.tensor([label_of[3]]), **kw)
    tol = dict(atol=1e-5 * float(whole.abs().max()), rtol=0)
    assert torch.allclose(shuffled[0], whole[3], **tol) and torch.allclose(shuffled[2], whole[0], **tol)
    assert torch.allclose(single[0], whole[1], **tol)
    if options:  # the step noise enters: without it (the deterministic variant) the image differs
        plain = sample_from_seeds(g, [3], torch.tensor([label_of[3]]), shape=SHAPE, sampler=name, steps=6)
        assert not torch.allclose(plain[0], single[0], atol=1e-3 * float(whole.abs().max()), rtol=0)

def test_settings_key_changes_with_the_scheduler_and_its_options():
    def fields(sampler, **options):
        return GenerationSettings(sampler=sampler, steps="20", options=options, seeds=[0]).pixel_fields()

    keys = [fields("dpm-solver++"), fields("unipc"), fields("dpm-solver++", order=3),
            fields("dpm-solver++", use_karras_sigmas=True), fields("euler"), fields("euler", s_churn=1.0)]
    assert all(a != b for i, a in enumerate(keys) for b in keys[i + 1:])


@pytest.mark.parametrize("options, named", [({"order": 5}, "order=5"), ({"order": 2.5}, "order=2.5"),
                                            ({"use_karras_sigmas": "maybe"}, "use_karras_sigmas"),
                                            ({"algorithm_type": "dpm"}, "algorithm_type"),
                                            ({"timestep_spacing": "even"}, "timestep_spacing"),
                                            ({"orderr": 2}, "orderr")])
def test_a_bad_scheduler_option_is_refused_naming_it(options, named):
    with pytest.raises(ValueError, match=f"^options: .*{named}") as err:
        GenerationSettings(sampler="dpm-solver++", steps="20", options=options, seeds=[0])
    assert "\n" not in str(err.value)


def test_cli_refuses_a_bad_option_in_one_line_before_loading(tmp_path, capsys):
    from domain_guidance.cli import main

    code = main(["sample", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--sampler",
                 "dpm-solver++", "--steps", "20", "--sampler-option", "order=7"])
    err = capsys.readouterr().err
    assert code == 2 and "order=7" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_velocity_models_are_refused_naming_the_samplers_that_fit():
    sit = tiny_dit(num_classes=3, seed=2, in_channels=3, latent=False, prediction="velocity")
    for name in SCHEDULERS:
        with pytest.raises(ValueError, match="integrates eps predictions, but the model predicts 'velocity'.*ode-heun"):
            check_prediction(SAMPLERS[name], Denoiser(sit, sit.config))
    assert dit_config("T/2").prediction == "eps"


@pytest.mark.parametrize("name", ["dpm-solver++", "euler"])
def test_callback_reports_every_step_and_its_data_estimate(name):
    """The last step lands on sigma = 0, where the sample is the step's data estimate: ``denoised`` must equal it."""
    pre, ft = _models()
    g = build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=W)
    seen = []
    x = sample_from_seeds(g, [1, 2], torch.tensor([0, 1]), SHAPE, sampler=name, steps=5, callback=seen.append)
    assert [info["i"] for info in seen] == list(range(5))
    assert [float(info["t"][0]) for info in seen] == SAMPLERS[name].timesteps(5)
    assert torch.allclose(seen[-1]["denoised"], x, atol=1e-5 * float(x.abs().max()), rtol=0)
    assert torch.equal(seen[-1]["x_next"], x)
