import math

import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import GuidedDenoiser, apply_guidance, build_guided_denoiser
from tests.core.helpers import tiny_dit


@pytest.fixture
def models():
    pre = tiny_dit(num_classes=10, seed=1)  # "ImageNet" model: 10 classes + null (label 10)
    ft = tiny_dit(num_classes=3, seed=2)  # target model: 3 classes + null (label 3)
    return Denoiser(pre, pre.config), Denoiser(ft, ft.config)


def _inputs(n=4):
    return torch.randn(n, 4, 8, 8), torch.full((n,), 400), torch.tensor([0, 1, 2, 0])[:n]


def test_dog_formula_and_w1_equals_conditional(models):
    pre, ft = models
    x, t, y = _inputs()
    cond, uncond = ft(x, t, y), pre(x, t, torch.full_like(y, 10))
    dog = build_guided_denoiser("dog", ft, pre, scale=2.5)
    out = dog(x, t, y)
    torch.testing.assert_close(out[:, :4], uncond[:, :4] + 2.5 * (cond[:, :4] - uncond[:, :4]))
    torch.testing.assert_close(out[:, 4:], cond[:, 4:])  # variance from the conditional branch
    assert torch.equal(build_guided_denoiser("dog", ft, pre, scale=1.0)(x, t, y), cond)


def test_dog_with_finetuned_guide_equals_cfg(models):
    _, ft = models
    x, t, y = _inputs()
    ft_as_guide = Denoiser(ft.net, ft.config)  # a different Denoiser object, same net: unbatched path
    ft_as_guide.same_network = lambda other: False
    cfg = build_guided_denoiser("cfg", ft, scale=3.0)(x, t, y)  # batched cond+uncond
    dog = build_guided_denoiser("dog", ft, ft_as_guide, scale=3.0)(x, t, y)
    torch.testing.assert_close(cfg, dog, atol=1e-6, rtol=1e-5)


def test_three_channel_compat_leaves_channel_3_unguided(models):
    pre, ft = models
    x, t, y = _inputs()
    cond = ft(x, t, y)
    full = build_guided_denoiser("dog", ft, pre, scale=4.0)(x, t, y)
    three = build_guided_denoiser("dog", ft, pre, scale=4.0, channels=3)(x, t, y)
    torch.testing.assert_close(three[:, :3], full[:, :3])
    torch.testing.assert_close(three[:, 3:], cond[:, 3:])
    assert not torch.allclose(full[:, 3], cond[:, 3])
    with pytest.raises(ValueError, match="channels must be in 1..4"):
        apply_guidance(cond, cond, 2.0, 4, channels=5)


def test_guidance_interval_edges(models):
    pre, ft = models
    x, _, y = _inputs()
    calls = []
    counting = Denoiser(pre.net, pre.config)
    original = Denoiser.__call__

    def spy(self, *a):
        calls.append(self is counting)
        return original(self, *a)

    g = build_guided_denoiser("dog", ft, counting, scale=2.0, interval=(100, 600))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Denoiser, "__call__", spy)
        for step, guided in ((99, False), (100, True), (600, True), (601, False)):
            calls.clear()
            t = torch.full((4,), step)
            out = g(x, t, y)
            assert any(calls) == guided, step  # outside: a single conditional evaluation
            assert len(calls) == (2 if guided else 1)
            assert torch.equal(out, ft(x, t, y)) != guided
    # mixed timesteps in one batch: each sample follows its own t
    t = torch.tensor([50, 300, 650, 600])
    out = g(x, t, y)
    full = build_guided_denoiser("dog", ft, pre, scale=2.0)(x, t, y)
    cond = ft(x, t, y)
    for i, inside in enumerate([False, True, False, True]):
        torch.testing.assert_close(out[i], (full if inside else cond)[i])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scale_is_refused(models, bad):
    pre, ft = models
    with pytest.raises(ValueError, match="finite"):
        build_guided_denoiser("dog", ft, pre, scale=bad)


def test_label_out_of_range(models):
    pre, ft = models
    x, t, _ = _inputs()
    with pytest.raises(ValueError, match=r"label 7 out of range: expected 0..2 or the null label 3"):
        ft(x, t, torch.tensor([0, 1, 7, 0]))
    with pytest.raises(ValueError, match="label -1"):
        build_guided_denoiser("dog", ft, pre, 2.0)(x, t, torch.tensor([0, -1, 1, 1]))


def test_cfg_needs_null_and_guide_input_space(models):
    pre, _ = models
    cond_only = tiny_dit(num_classes=3, null_class=False, class_dropout_prob=0.0)
    d = Denoiser(cond_only, cond_only.config)
    with pytest.raises(ValueError, match="CFG needs a fine-tuned model with a null label"):
        build_guided_denoiser("cfg", d, scale=2.0)
    build_guided_denoiser("dog", d, pre, scale=2.0)(*_inputs())  # DoG works without one
    other = tiny_dit(num_classes=10, input_size=16)
    with pytest.raises(ValueError, match=r"input_size: fine-tuned \(8, 8\) vs guide \(16, 16\)"):
        build_guided_denoiser("dog", d, Denoiser(other, other.config), scale=2.0)
    with pytest.raises(ValueError, match="unknown guidance method"):
        build_guided_denoiser("pag", d, pre)


def test_guided_denoiser_is_generic_over_ndim():
    class Point:
        null_label, data_channels = 2, 2

        def __init__(self, shift):
            self.shift = shift

        def __call__(self, x, t, labels):
            return x + self.shift + labels[:, None].float()

        def input_space(self):
            return {"dim": 2}

        def same_network(self, other):
            return False

    g = GuidedDenoiser(Point(1.0), Point(0.0), scale=2.0, interval=(0, 10))
    x = torch.zeros(3, 2)
    out = g(x, torch.tensor([5, 5, 50]), torch.tensor([0, 1, 1]))
    # uncond = 0 + 2 (null label); cond = 1 + label; guided = 2 + 2 * (cond - 2)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [2.0, 2.0], [2.0, 2.0]]))


@pytest.mark.parametrize("method", ["dog", "cfg"])
def test_scale_just_above_one_is_the_rule_not_the_shortcut(models, method):
    """w = 1 short-circuits to the conditional branch; w = 1 + 1e-3 must go through the rule:
    uncond + w (cond - uncond) with the branches evaluated here on the raw networks, and within
    O(eps) of the conditional output (but not equal to it)."""
    pre, ft = models
    with torch.no_grad():  # a label table 50x larger: the tiny net's labels then move its output by ~0.1
        ft.net.y_embedder.embedding_table.weight.mul_(50)
    x, t, y = _inputs()
    eps = 1e-3
    with torch.no_grad():
        cond = ft.net(x, t, y).double()  # (4, 8, 8, 8): eps (4 channels) then the variance
        if method == "dog":
            uncond = pre.net(x, t, torch.full_like(y, 10)).double()  # the pre-trained model's own null label
        else:
            uncond = ft.net(x, t, torch.full_like(y, 3)).double()  # the fine-tuned model's null label
    g = build_guided_denoiser(method, ft, pre if method == "dog" else None, scale=1 + eps)
    out = g(x, t, y).double()
    expected = torch.cat([uncond[:, :4] + (1 + eps) * (cond[:, :4] - uncond[:, :4]), cond[:, 4:]], 1)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=0)
    gap = (cond[:, :4] - uncond[:, :4]).abs()
    assert gap.amax() > 0.05  # the branches really differ, so the test can see the guidance term
    dev = (out[:, :4] - cond[:, :4]).abs()
    assert (dev <= eps * gap + 2e-6).all()  # |guided - cond| = eps |cond - uncond|
    assert dev.amax() > 0.5 * eps * gap.amax()  # ... and it is not the conditional output itself
    torch.testing.assert_close(out[:, 4:], cond[:, 4:], atol=1e-6, rtol=0)
