"""Autoguidance: the guide is a weaker model of the same classes at the same (conditional) label, one rule."""
import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import GuidedDenoiser, apply_guidance, build_guided_denoiser
from domain_guidance.core.sampling import sample_from_seeds

from .helpers import tiny_dit


class Counting:
    """A Denoiser that records the labels of every call (how the label policy is seen from outside)."""

    def __init__(self, den):
        self.den, self.labels = den, []

    def __getattr__(self, name):
        return getattr(self.den, name)

    def __call__(self, x, t, y):
        self.labels.append(y.clone())
        return self.den(x, t, y)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 8, 8, generator=g), torch.tensor([5, 400, 900]), torch.tensor([0, 1, 2])


def test_autoguidance_with_the_model_itself_as_guide_is_unguided():
    net = tiny_dit(num_classes=3)
    den = Denoiser(net, net.config)
    x, t, y = _inputs()
    guided = build_guided_denoiser("autoguidance", den, den, scale=2.5)
    assert torch.equal(guided(x, t, y), den(x, t, y))
    a = sample_from_seeds(guided, [0, 1], torch.tensor([0, 2]), (4, 8, 8), sampler="ddim", steps=4)
    b = sample_from_seeds(GuidedDenoiser(den), [0, 1], torch.tensor([0, 2]), (4, 8, 8), sampler="ddim", steps=4)
    assert torch.equal(a, b)


def test_autoguidance_calls_the_guide_at_the_conditional_label_and_dog_at_its_null():
    ft = tiny_dit(num_classes=3, seed=1)
    weak = tiny_dit(num_classes=3, seed=2)
    pre = tiny_dit(num_classes=10, seed=3)
    x, t, y = _inputs()
    auto_guide = Counting(Denoiser(weak, weak.config))
    out = build_guided_denoiser("autoguidance", Denoiser(ft, ft.config), auto_guide, scale=2.0)(x, t, y)
    assert torch.equal(auto_guide.labels[0], y)
    expected = apply_guidance(ft(x, t, y), weak(x, t, y), 2.0, 4)  # the one rule, guide at the same labels
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    manual = weak(x, t, y)[:, :4] + 2.0 * (ft(x, t, y)[:, :4] - weak(x, t, y)[:, :4])
    torch.testing.assert_close(out[:, :4], manual, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, 4:], ft(x, t, y)[:, 4:], rtol=0, atol=0)  # variance from the conditional
    dog_guide = Counting(Denoiser(pre, pre.config))
    build_guided_denoiser("dog", Denoiser(ft, ft.config), dog_guide, scale=2.0)(x, t, y)
    assert dog_guide.labels[0].tolist() == [10, 10, 10]


def test_autoguidance_refuses_a_guide_of_other_classes_or_none():
    ft, pre = tiny_dit(num_classes=3), tiny_dit(num_classes=10)
    with pytest.raises(ValueError, match="the model has 3 classes, the guide 10"):
        build_guided_denoiser("autoguidance", Denoiser(ft, ft.config), Denoiser(pre, pre.config))
    with pytest.raises(ValueError, match="autoguidance needs a guide"):
        build_guided_denoiser("autoguidance", Denoiser(ft, ft.config), None)
    with pytest.raises(ValueError, match="guide_label must be one of"):
        GuidedDenoiser(Denoiser(ft, ft.config), guide_label="other")
    # a guide without a null label is fine for autoguidance (it never sees one)
    no_null = tiny_dit(num_classes=3, null_class=False, class_dropout_prob=0.0)
    build_guided_denoiser("autoguidance", Denoiser(ft, ft.config), Denoiser(no_null, no_null.config))
