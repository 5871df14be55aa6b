"""Single-pass Domain Guidance (DogFit): the training target is the sampler's DoG offset; w = 1 is the plain loss."""
from __future__ import annotations

import json

import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import GuidedDenoiser
from domain_guidance.core.models.difffit import DiffFit
from domain_guidance.core.seeds import PerSampleNoise
from domain_guidance.io.checkpoints import load_model
from domain_guidance.pipelines.generate import GenerationSettings, load_models
from domain_guidance.pipelines.generate.models import build_denoiser
from domain_guidance.pipelines.training import train
from domain_guidance.pipelines.training.config import SinglePassConfig
from domain_guidance.pipelines.training.ema import EMA
from domain_guidance.pipelines.training.single_pass import (SinglePassTarget, draw_w, guidance_offset, guided_losses,
                                                              noise_level, single_pass_offset)

from ..core.helpers import tiny_dit
from ..training.conftest import tiny_config, tiny_base  # noqa: F401  (session fixture)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _batch(n=5, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, 8, 8, generator=g), torch.randint(0, 1000, (n,), generator=g),
            torch.randint(0, classes, (n,), generator=g))


def test_target_offset_equals_the_samplers_dog_offset():
    base = tiny_dit(num_classes=10, seed=1)  # pre-trained: 10 classes + null
    ema_net = tiny_dit(num_classes=3, seed=2)  # the EMA of the fine-tune: 3 target classes + null
    x, t, y = _batch()
    w = torch.tensor([1.5, 1.5, 3.0, 0.5, 1.5])
    active = torch.tensor([True, True, True, True, False])
    offset = single_pass_offset(ema_net, base, x, t, y, 10, w, active, data_channels=4)
    ft, guide = Denoiser(ema_net, ema_net.config), Denoiser(base, base.config)
    for i in range(4):  # per sample: what `dog sample --method dog --scale w` adds to the conditional eps
        sampler = GuidedDenoiser(ft, guide, float(w[i]))
        dog_offset = (sampler(x[i:i + 1], t[i:i + 1], y[i:i + 1]) - ft(x[i:i + 1], t[i:i + 1], y[i:i + 1]))[:, :4]
        torch.testing.assert_close(offset[i:i + 1], dog_offset, rtol=0, atol=2e-6)
    # independent formula: (w - 1) * (eps_ema(x, c) - eps_pre(x, null_pre)); variance channels get nothing
    e, g = ema_net(x, t, y)[:, :4], base(x, t, torch.full_like(y, 10))[:, :4]
    expected = (w - 1).view(-1, 1, 1, 1) * (e - g)
    expected[4] = 0
    torch.testing.assert_close(offset, expected, rtol=0, atol=2e-6)
    assert offset[:4].abs().amax() > 1e-3  # not trivially zero
    assert torch.equal(offset[4], torch.zeros_like(offset[4]))


def test_offset_through_a_difffit_run_uses_the_ema_and_the_base_with_factors_off():
    base = tiny_dit(num_classes=10, seed=1)
    reference_base = tiny_dit(num_classes=10, seed=1)
    net = DiffFit(base, base.config.replace(num_classes=3))
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    ema = EMA(trainable, cfg=type("E", (), {"decay": 0.5, "warmup": "none"})())
    with torch.no_grad():  # raw weights differ from the EMA: the teacher must be the EMA
        for p in ema.shadow.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.05)
    target = SinglePassTarget(SinglePassConfig(enabled=True, w=2.0), net, net.base, 10, False, False, 1000, 4)
    x, t, y = _batch()
    w = torch.full((5,), 2.0)
    active = torch.ones(5, dtype=torch.bool)
    net.train()
    off = target.offset(x, t, y, w, active, ema, trainable)
    assert net.training  # restored
    with ema.applied(trainable):
        e = net(x, t, y)[:, :4]
    g = reference_base(x, t, torch.full_like(y, 10))[:, :4]
    torch.testing.assert_close(off, e - g, rtol=0, atol=2e-6)
    raw = net(x, t, y)[:, :4]
    assert not torch.allclose(off, raw - g, atol=1e-4)


def test_w_one_gives_the_plain_losses_and_the_offset_moves_the_target():
    diffusion = __import__("domain_guidance.core.diffusion", fromlist=["create_diffusion"]).create_diffusion("")
    x0, t, _ = _batch()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    x_t = diffusion.q_sample(x0, t, noise)
    out = torch.randn(5, 8, 8, 8, generator=torch.Generator().manual_seed(6))
    e, g = torch.randn(2, 5, 8, 8, 8, generator=torch.Generator().manual_seed(7))
    zero = guidance_offset(e, g, torch.ones(5), 4)
    assert torch.equal(zero, torch.zeros_like(zero))
    plain = diffusion.training_losses(out, x0, x_t, t, noise)
    same = guided_losses(out, x0, x_t, t, noise, zero, diffusion)
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    moved = guided_losses(out, x0, x_t, t, noise, guidance_offset(e, g, torch.full((5,), 2.0), 4), diffusion)
    expected_mse = ((noise + (e - g)[:, :4] - out[:, :4]) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(moved["mse"], expected_mse, rtol=1e-6, atol=1e-6)
    assert torch.equal(moved["vb"], plain["vb"])  # the variance bound does not see the target
    # velocity models: target data - noise + offset
    flow = guided_losses(out[:, :4], x0, x_t, t, noise, torch.full_like(x0, 0.5), None)
    torch.testing.assert_close(flow["mse"], ((x0 - noise + 0.5 - out[:, :4]) ** 2).mean(dim=(1, 2, 3)))


def test_late_start_cutoff_and_dropped_labels_switch_the_offset_off():
    cfg = SinglePassConfig(enabled=True, w=2.0, start_step=10, cutoff=0.5)
    sp = SinglePassTarget(cfg, torch.nn.Identity(), torch.nn.Identity(), 10, False, False, 1000, 4)
    t = torch.tensor([0, 400, 499, 500, 999, 100])
    kept = torch.tensor([True, True, True, True, True, False])
    assert not sp.active(t, 10, kept).any()  # steps 1..10: plain target
    assert sp.active(t, 11, kept).tolist() == [True, True, True, False, False, False]  # 499/999 < 0.5 <= 500/999
    flow = SinglePassTarget(cfg, torch.nn.Identity(), torch.nn.Identity(), 10, False, True, 1, 4)
    assert flow.active(torch.tensor([0.0, 0.6, 0.4]), 11, torch.ones(3, dtype=torch.bool)).tolist() == [False, True, False]
    assert noise_level(torch.tensor([0.25]), True, 1).item() == 0.75  # SiT: t = 0 is noise


def test_w_draws_are_one_plus_exponential_per_sample_seed():
    w = draw_w(PerSampleNoise(range(4000)), rate=2.0, w_max=None)
    assert w.min() >= 1.0
    assert abs((w - 1).mean().item() - 0.5) < 0.03  # Exp(2) has mean 1/2
    again = draw_w(PerSampleNoise([7, 8]), 2.0, None)
    assert torch.equal(again, w[7:9])  # each sample's w depends on its own seed only
    assert draw_w(PerSampleNoise(range(4000)), 2.0, 2.0).max() == 2.0


def _weights(path):
    return load_model(path).net.state_dict()


def test_w_one_trains_exactly_like_the_plain_loss_and_w_two_does_not(tmp_path, tiny_base):  # noqa: F811
    sets = [f"base={tiny_base}", "data.dataset=digits", "data.classes=[3, 4]", "label_dropout=0.1", "steps=3",
            "ema.decay=0.5"]
    plain = train(tiny_config(tmp_path / "plain", *sets, preset=None))
    one = train(tiny_config(tmp_path / "one", *sets, "single_pass.enabled=true", "single_pass.w=1", preset=None))
    two = train(tiny_config(tmp_path / "two", *sets, "single_pass.enabled=true", "single_pass.w=2", preset=None))
    a, b, c = _weights(plain.checkpoint), _weights(one.checkpoint), _weights(two.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    meta = json.loads((two.checkpoint / "metadata.json").read_text())["metadata"]
    assert meta["guidance_distilled"]["method"] == "dog-single-pass" and meta["guidance_distilled"]["w"] == 2.0
    assert "guidance_distilled" not in json.loads((plain.checkpoint / "metadata.json").read_text())["metadata"]
    from domain_guidance.pipelines.training.logging import read_log

    logged = read_log(two.run_dir, "train")  # the offset is monitored: its rms and the share of rows that got it
    assert len(logged) == 3 and all(0.5 <= e["offset_rows"] <= 1.0 for e in logged)  # rows with a dropped label: none
    assert any(e["offset_rows"] < 1.0 for e in logged)  # label dropout 0.1 dropped some rows: they get no offset
    assert all(e["offset_rms"] > 0 for e in logged) and "offset_rms" not in read_log(plain.run_dir, "train")[0]


def test_w_conditioned_difffit_run_samples_unguided_at_the_chosen_w(tmp_path, tiny_base):  # noqa: F811
    sets = [f"base={tiny_base}", "data.dataset=digits", "data.classes=[3, 4]", "label_dropout=0", "steps=3",
            "mode=difffit", "lr=0.05", "ema.decay=0", "single_pass.enabled=true", "single_pass.w=2", "single_pass.w_cond=true"]
    run = train(tiny_config(tmp_path / "wc", *sets, preset=None))
    loaded = load_model(run.checkpoint)
    assert loaded.config.w_embed and loaded.config.num_classes == 2
    assert loaded.metadata["guidance_distilled"]["w_cond"] is True and loaded.metadata["difffit"]["folded"]
    models = load_models(str(run.checkpoint), str(tiny_base))
    calls = []
    net = models.finetuned.net
    hook = net.register_forward_hook(lambda m, a, k: calls.append(a[0].shape[0]), with_kwargs=False)
    seeds, labels = [0, 1], [0, 1]
    s1 = GenerationSettings(method="unguided", sampler="ddim", steps="4", seeds=seeds, labels=labels, model_w=1.0,
                            clip_denoised=False)
    s3 = GenerationSettings(method="unguided", sampler="ddim", steps="4", seeds=seeds, labels=labels, model_w=3.0,
                            clip_denoised=False)
    from domain_guidance.pipelines.generate.models import sample_images
    x1 = sample_images(s1, models, decode=False)
    assert len(calls) == 4  # one network evaluation per step
    x3 = sample_images(s3, models, decode=False)
    hook.remove()
    assert not torch.allclose(x1, x3)  # w is a real input
    xd = sample_images(GenerationSettings(method="unguided", sampler="ddim", steps="4", seeds=seeds, labels=labels),
                       models, decode=False)
    xr = sample_images(GenerationSettings(method="unguided", sampler="ddim", steps="4", seeds=seeds, labels=labels,
                                          model_w=2.0), models, decode=False)
    assert torch.equal(xd, xr)  # default: the recorded w
    with pytest.warns(UserWarning, match="guidance distilled into it .*--method dog guides it a second time"):
        build_denoiser(GenerationSettings(method="dog", scale=1.5, sampler="ddim", steps="4", seeds=seeds,
                                          labels=labels), models)
    plain = load_models(str(tiny_base))
    with pytest.raises(ValueError, match="model_w=2 applies to a w-conditioned"):
        build_denoiser(GenerationSettings(method="unguided", sampler="ddim", steps="4", model_w=2.0), plain)


def test_lora_single_pass_runs_and_w_cond_with_lora_is_refused(tmp_path, tiny_base):  # noqa: F811
    sets = [f"base={tiny_base}", "data.dataset=digits", "data.classes=[3, 4]", "steps=2", "mode=lora",
            "lora.rank=2", "single_pass.enabled=true", "single_pass.w=2"]
    run = train(tiny_config(tmp_path / "lora", *sets, preset=None))
    assert load_model(run.checkpoint).metadata["guidance_distilled"]["w"] == 2.0
    with pytest.raises(ValueError, match="w_cond=true is not available with mode='lora'"):
        tiny_config(tmp_path / "x", *sets, "single_pass.w_cond=true", preset=None)
    with pytest.raises(ValueError, match="single_pass.cutoff must be in"):
        tiny_config(tmp_path / "x", *sets, "single_pass.cutoff=1.5", preset=None)
    with pytest.raises(ValueError, match="start_step=5 is not before steps=2"):
        tiny_config(tmp_path / "x", *sets, "single_pass.start_step=5", preset=None)


@pytest.mark.parametrize("mode", ["difffit", "lora"])
def test_single_pass_resume_is_bit_identical(tmp_path, tiny_base, mode):  # noqa: F811
    """N steps + resume for N more == 2N in one go, with the late start falling in the second half."""
    from domain_guidance.pipelines.training import load_train_state

    from ..training.test_resume import EXACT, assert_same_state

    extra = ["lora.rank=2", "lora.dropout=0.1"] if mode == "lora" else ["single_pass.w_cond=true", "single_pass.cutoff=0.7"]
    sets = [f"base={tiny_base}", "data.dataset=digits", "data.classes=[3, 4]", "data.images_per_class=12",
            f"mode={mode}", "single_pass.enabled=true", "single_pass.w=2.5", "single_pass.start_step=2", *extra, *EXACT]
    one = train(tiny_config(tmp_path / "one", "steps=5", *sets, preset=None))
    first = train(tiny_config(tmp_path / "two", "steps=3", *sets, preset=None))
    second = train(tiny_config(tmp_path / "two", "steps=5", *sets, preset=None), resume=True)
    a, b = load_train_state(one.checkpoint), load_train_state(second.checkpoint)
    assert a["mode"] == mode and all(not k.startswith("base.") or "w_embedder" in k for k in a["model"])
    assert_same_state(a, b)
    start = load_train_state(first.checkpoint)
    assert any(not torch.equal(start["model"][k], a["model"][k]) for k in a["model"])


def test_flow_single_pass_w_one_is_the_plain_velocity_loss(tmp_path, tiny_base):  # noqa: F811
    """A velocity model (the tiny base declared velocity, like the demo's flow source): same rules."""
    sets = [f"base={tiny_base}", "base_prediction=velocity", "base_reinterpret=true", "data.dataset=digits",
            "data.classes=[3, 4]", "steps=2", "label_dropout=0", "ema.decay=0.5"]
    plain = train(tiny_config(tmp_path / "plain", *sets, preset=None))
    one = train(tiny_config(tmp_path / "one", *sets, "single_pass.enabled=true", "single_pass.w=1", preset=None))
    two = train(tiny_config(tmp_path / "two", *sets, "single_pass.enabled=true", "single_pass.w=3", preset=None))
    a, b, c = _weights(plain.checkpoint), _weights(one.checkpoint), _weights(two.checkpoint)
    assert load_model(two.checkpoint).config.prediction == "velocity"
    assert load_model(two.checkpoint).metadata["base"]["reinterpreted"] == {"prediction": "velocity"}  # provenance
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_sample_grids_of_a_w_conditioned_run_use_its_w(tmp_path, tiny_base):  # noqa: F811
    sets = [f"base={tiny_base}", "data.dataset=digits", "data.classes=[3, 4]", "steps=2", "mode=full",
            "single_pass.enabled=true", "single_pass.w=2", "single_pass.w_cond=true", "sample_every=2",
            "grid.num=2", "grid.steps=3", "grid.methods=[unguided, dog]"]
    run = train(tiny_config(tmp_path / "g", *sets, preset=None))
    info = json.loads((run.run_dir / "grids" / "step_0000002.json").read_text())
    assert info["rows"] == ["unguided", "dog"]


def test_dogfit_preset_is_the_published_recipe_plus_the_single_pass_target():
    from domain_guidance.pipelines.training import resolve_config

    pub = resolve_config("dit-xl2-imagenet-published", sets=["base=x.pt", "data.dataset=digits"]).to_dict()
    fit = resolve_config("dit-xl2-imagenet-dogfit", sets=["base=x.pt", "data.dataset=digits"]).to_dict()
    differ = {k for k in pub if pub[k] != fit[k]}
    assert differ == {"preset", "label_dropout", "single_pass", "out", "grid"}
    assert fit["label_dropout"] == 0.0 and fit["single_pass"]["w"] == 1.5 and fit["single_pass"]["start_step"] == 12000
