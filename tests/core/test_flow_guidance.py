"""Guidance on velocities (SiT): the one rule, each model's own null label, intervals in SiT time,
the 3-channel compatibility option, and the refusal to guide a SiT model with a DiT."""
import copy

import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import GuidedDenoiser, build_guided_denoiser
from domain_guidance.core.sampling import sample
from domain_guidance.core.seeds import PerSampleNoise
from tests.core.helpers import tiny_dit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def models():
    pre = tiny_dit(num_classes=10, seed=1, prediction="velocity")  # SiT base: 10 classes + null 10
    ft = tiny_dit(num_classes=3, seed=2, prediction="velocity")  # SiT fine-tune: 3 classes + null 3
    with torch.no_grad():  # larger label tables: labels move the tiny nets' outputs visibly
        for net in (pre, ft):
            net.y_embedder.embedding_table.weight.mul_(50)
    return Denoiser(pre, pre.config), Denoiser(ft, ft.config)


def _noise(n=3, seed=0):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _euler_by_hand(cond_net, uncond_net, null, w, x, y, steps, interval=None):
    """ode-euler with guidance written out on the raw networks: t = i / steps (SiT time), first 4 channels."""
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((x.shape[0],), i / steps)
            v = cond_net(x, t, y)[:, :4]
            if interval is None or interval[0] <= i / steps <= interval[1]:
                u = uncond_net(x, t, torch.full_like(y, null))[:, :4]
                v = u + w * (v - u)
            x = x + v / steps
    return x


@pytest.mark.parametrize("interval", [None, (0.3, 0.5)])
def test_dog_on_velocities_is_the_rule_with_the_guides_own_null(models, interval):
    pre, ft = models
    x, y = _noise(), torch.tensor([0, 1, 2])
    g = build_guided_denoiser("dog", ft, pre, scale=2.0, interval=interval)
    out = sample(g, x, y, sampler="ode-euler", steps=5)
    expected = _euler_by_hand(ft.net, pre.net, 10, 2.0, x, y, 5, interval)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    unguided = sample(build_guided_denoiser("unguided", ft), x, y, sampler="ode-euler", steps=5)
    assert (out - unguided).abs().amax() > 0.05  # guidance changed the samples
    if interval is not None:  # of t = 0, .2, .4, .6, .8 only t = .4 is guided
        always = sample(build_guided_denoiser("dog", ft, pre, scale=2.0), x, y, sampler="ode-euler", steps=5)
        assert (out - always).abs().amax() > 0.05


def test_cfg_uses_the_finetuned_null_and_dog_with_that_branch_is_cfg(models):
    _, ft = models
    x, y = _noise(seed=1), torch.tensor([2, 0, 1])
    cfg = sample(build_guided_denoiser("cfg", ft, scale=3.0), x, y, sampler="ode-heun", steps=4)  # one batched call
    copy_net = copy.deepcopy(ft.net)  # another network with the same weights: the two-call path
    dog = sample(build_guided_denoiser("dog", ft, Denoiser(copy_net, ft.config), scale=3.0), x, y, sampler="ode-heun",
                 steps=4)
    torch.testing.assert_close(cfg, dog, atol=1e-5, rtol=0)
    by_hand = _euler_by_hand(ft.net, ft.net, 3, 3.0, x, y, 4)
    cfg_euler = sample(build_guided_denoiser("cfg", ft, scale=3.0), x, y, sampler="ode-euler", steps=4)
    torch.testing.assert_close(cfg_euler, by_hand, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["cfg", "dog"])
def test_w1_is_conditional_and_w_just_above_moves_by_order_eps(models, method):
    pre, ft = models
    x, y = _noise(seed=2), torch.tensor([1, 1, 0])
    kw = dict(sampler="sde-euler", steps=6)
    guide = pre if method == "dog" else None
    plain = sample(build_guided_denoiser("unguided", ft), x, y, step_noise=PerSampleNoise([1, 2, 3]), **kw)
    w1 = sample(build_guided_denoiser(method, ft, guide, scale=1.0), x, y, step_noise=PerSampleNoise([1, 2, 3]), **kw)
    assert torch.equal(w1, plain)
    near = sample(build_guided_denoiser(method, ft, guide, scale=1.001), x, y, step_noise=PerSampleNoise([1, 2, 3]),
                  **kw)
    far = sample(build_guided_denoiser(method, ft, guide, scale=1.1), x, y, step_noise=PerSampleNoise([1, 2, 3]), **kw)
    d_near, d_far = (near - plain).abs().amax(), (far - plain).abs().amax()
    assert 0 < d_near < 2e-3
    assert 50 < d_far / d_near < 150  # linear in w - 1 to first order (100x)


def test_three_channel_compat_on_velocities(models):
    pre, ft = models
    x, t, y = _noise(seed=3), torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0, 1, 2])
    cond = ft(x, t, y)  # (3, 8, 8, 8): velocity then the unused learned-sigma half
    full = build_guided_denoiser("dog", ft, pre, scale=4.0)(x, t, y)
    three = build_guided_denoiser("dog", ft, pre, scale=4.0, channels=3)(x, t, y)
    torch.testing.assert_close(three[:, :3], full[:, :3])
    torch.testing.assert_close(three[:, 3:], cond[:, 3:])
    assert not torch.allclose(full[:, 3], cond[:, 3])


def test_guidance_interval_is_in_sit_time(models):
    pre, ft = models
    times = []

    class Counting(Denoiser):
        def __call__(self, x, t, labels):
            times.append(round(float(t[0]), 6))
            return super().__call__(x, t, labels)

    guide = Counting(pre.net, pre.config)
    g = GuidedDenoiser(ft, guide, scale=2.0, interval=(0.25, 0.5))
    sample(g, _noise(), torch.tensor([0, 1, 2]), sampler="ode-euler", steps=8)
    assert times == [0.25, 0.375, 0.5]  # t = 0 is noise: the guide runs only inside [0.25, 0.5]


def test_a_dit_guide_for_a_sit_model_is_refused_clearly(models):
    _, ft = models
    dit = tiny_dit(num_classes=10, seed=1)  # eps prediction
    with pytest.raises(ValueError, match=r"prediction: fine-tuned 'velocity' vs guide 'eps'\): a flow-matching "
                                         r"\(SiT, velocity\) model cannot be guided by a diffusion \(DiT, eps\) model"):
        build_guided_denoiser("dog", ft, Denoiser(dit, dit.config))
    with pytest.raises(ValueError, match=r"a diffusion \(DiT, eps\) model cannot be guided by a flow-matching"):
        build_guided_denoiser("dog", Denoiser(dit, dit.config), ft)


def test_generation_settings_take_flow_samplers_and_sit_time_intervals():
    from domain_guidance.pipelines.generate.settings import GenerationSettings

    s = GenerationSettings(method="dog", sampler="sde-euler", steps="250", interval=(0.0, 0.7), seeds=[0])
    assert s.interval == (0.0, 0.7)
    with pytest.raises(ValueError, match=r"interval: \(100, 500\) is outside the sampler's timestep range 0..1"):
        GenerationSettings(method="dog", sampler="ode-heun", steps="50", interval=(100, 500), seeds=[0])
    with pytest.raises(ValueError, match="steps: steps 'ddim50': the ode-euler sampler"):
        GenerationSettings(method="dog", sampler="ode-euler", steps="ddim50", seeds=[0])
    with pytest.raises(ValueError, match="eta: applies to the ddim sampler only"):
        GenerationSettings(method="dog", sampler="ode-euler", steps="50", eta=0.5, seeds=[0])
