"""LoRA-DoG in one network call: a batch of 2N with per-sample adapter selection equals the two calls.

One intra-op thread: with two, the matmul blocking depends on the batch size and results move by
float32 rounding (measured 2.5e-6 of the output scale), which the tolerances below still allow.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from domain_guidance.core.denoiser import Denoiser, evaluate_pair
from domain_guidance.core.guidance import apply_guidance, build_guided_denoiser
from domain_guidance.core.models.adapters import add_lora, adapter_per_sample
from domain_guidance.core.sampling import sample_from_seeds
from tests.core.helpers import tiny_dit


def lora_pair(seed: int = 0) -> tuple[Denoiser, Denoiser]:
    """(fine-tuned: adapter on, 3 target classes + null; guide: adapter off, 10 classes + null) on one network."""
    base = tiny_dit(num_classes=10, seed=seed, std=0.2)
    target = base.config.replace(num_classes=3)
    net = add_lora(base, target, rank=4)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # peft initialises lora_B at 0 (a no-op adapter): make the adapter change the output
        for name, p in net.named_parameters():
            if "lora_" in name or "y_embedder.target" in name:
                p.normal_(0, 0.3)
    return Denoiser(net, target), Denoiser(net, base.config, adapter=False)


def assert_near(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-6) -> None:
    """Equal up to float32 rounding: ``rel`` times the largest magnitude (outputs here reach ~20)."""
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(b.abs().max()))


def inputs(n: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, 8, 8, generator=g)  # (N, C, H, W)
    t = torch.full((n,), 400, dtype=torch.long)
    labels = torch.tensor([0, 1, 2, 0, 1][:n])
    return x, t, labels


def test_one_call_equals_two_calls(one_thread):
    ft, guide = lora_pair()
    x, t, labels = inputs()
    null = torch.full_like(labels, guide.null_label)  # 10: out of the target table's range (3 classes + null)
    with torch.no_grad():
        two_cond, two_guide = ft(x, t, labels), guide(x, t, null)
        one_cond, one_guide = evaluate_pair(ft, guide, x, t, labels, null)
    # the adapter and the label table really change the output, so equality below is not trivial
    assert (two_cond - two_guide).abs().max() > 0.1
    assert_near(one_cond, two_cond)
    assert_near(one_guide, two_guide)


def test_one_call_counts_evaluations_and_restores_state():
    ft, guide = lora_pair()
    x, t, labels = inputs(4)
    null = torch.full_like(labels, guide.null_label)
    with torch.no_grad():
        evaluate_pair(ft, guide, x, t, labels, null)
        after = ft(x, t, labels)
        ref = dataclasses.replace(ft)(x, t, labels)
    assert (ft.evaluations, guide.evaluations) == (4 + 4, 4)  # one pair (4 + 4) and one plain call on ft
    torch.testing.assert_close(after, ref, rtol=0, atol=0)  # no selection left behind in the network


def test_guided_sampling_one_call_matches_two_calls(one_thread):
    """Whole DoG sampling runs: the one-call path against the two-call path (fuse=False)."""
    ft, guide = lora_pair(seed=4)
    labels = torch.tensor([0, 1, 2])
    outs = {}
    for fuse in (True, False):
        f, g = dataclasses.replace(ft, fuse=fuse), dataclasses.replace(guide, fuse=fuse)
        den = build_guided_denoiser("dog", f, g, scale=2.0)
        with torch.no_grad():
            outs[fuse] = sample_from_seeds(den, [0, 1, 2], labels, (4, 8, 8), sampler="ddim", steps=5)
        assert f.evaluations == g.evaluations == 3 * 5  # one conditional and one guide evaluation per step
    assert_near(outs[True], outs[False], rel=1e-5)


def test_per_sample_selection_needs_an_adapter():
    net = tiny_dit()
    with pytest.raises(ValueError, match="peft-adapted model"):
        with adapter_per_sample(net, torch.tensor([True, False])):
            pass


def test_cfg_path_unchanged_by_fusion(one_thread):
    """CFG on one network: one call of 2N equals the two calls it replaces, and counts 2 per sample."""
    net = tiny_dit(num_classes=10, seed=2, std=0.2, class_dropout_prob=0.1)
    den = Denoiser(net, net.config)
    x, t, labels = inputs()
    null = torch.full_like(labels, den.null_label)
    with torch.no_grad():
        one = evaluate_pair(den, den, x, t, labels, null)
        two = (Denoiser(net, net.config)(x, t, labels), Denoiser(net, net.config)(x, t, null))
    for a, b in zip(one, two):
        assert_near(a, b)
    assert den.evaluations == 2 * 5
    guided = apply_guidance(*one, 1.5, den.data_channels)
    assert guided.shape == (5, 8, 8, 8)
