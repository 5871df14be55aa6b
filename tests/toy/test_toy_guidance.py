"""CFG and DoG through the core guidance on the 2-D study's denoisers."""
from __future__ import annotations

import copy

import pytest
import torch

from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.pipelines.toy.exact import ExactDenoiser, GaussianMixture
from domain_guidance.pipelines.toy.learned import MLPDenoiser, ToyMLP, finetune
from domain_guidance.pipelines.toy.sampling import sample_points
from domain_guidance.pipelines.toy.config import ToyConfig
from domain_guidance.pipelines.toy.scenario import build_scenario

F64 = torch.float64


@pytest.fixture(scope="module")
def scenario():
    return build_scenario(ToyConfig())


def exact_pair(scenario):
    ft = ExactDenoiser(scenario.target_classes, scenario.target, "target")
    guide = ExactDenoiser(scenario.source_classes, scenario.source, "source")
    return ft, guide


def probe(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, 2, dtype=F64, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    return x, t, labels


def test_cfg_and_dog_coincide_at_w1(scenario):
    ft, guide = exact_pair(scenario)
    x, t, y = probe()
    cfg = build_guided_denoiser("cfg", ft, guide, scale=1.0)
    dog = build_guided_denoiser("dog", ft, guide, scale=1.0)
    torch.testing.assert_close(cfg(x, t, y), ft(x, t, y), rtol=0, atol=0)
    torch.testing.assert_close(dog(x, t, y), ft(x, t, y), rtol=0, atol=0)
    labels = torch.tensor([0, 1]).repeat_interleave(50)
    torch.testing.assert_close(sample_points(cfg, labels, 4, steps=20), sample_points(dog, labels, 4, steps=20))


def test_cfg_and_dog_differ_when_the_unconditionals_differ(scenario):
    ft, guide = exact_pair(scenario)
    x, t, y = probe()
    cfg = build_guided_denoiser("cfg", ft, guide, scale=3.0)(x, t, y)
    dog = build_guided_denoiser("dog", ft, guide, scale=3.0)(x, t, y)
    assert (cfg - dog).abs().max() > 1e-2
    # and the difference is exactly w * (eps_pre_null - eps_ft_null) - (eps_pre_null - eps_ft_null)
    null_ft, null_pre = torch.full_like(y, ft.null_label), torch.full_like(y, guide.null_label)
    torch.testing.assert_close(dog - cfg, (1 - 3.0) * (guide(x, t, null_pre) - ft(x, t, null_ft)))


def test_cfg_and_dog_coincide_when_the_unconditional_densities_are_equal(scenario):
    ft, _ = exact_pair(scenario)
    # a different "pre-trained" model (other classes) whose marginal equals the target marginal
    other = [GaussianMixture.isotropic([[5.0, 5.0]], 1.0), GaussianMixture.isotropic([[-5.0, 0.0]], 0.5),
             GaussianMixture.isotropic([[0.0, 3.0]], 2.0)]
    same_marginal = GaussianMixture(scenario.target.means.clone(), scenario.target.covs.clone(),
                                    scenario.target.weights.clone())
    guide = ExactDenoiser(other, same_marginal, "equal-marginal guide")
    assert guide.null_label != ft.null_label and not guide.same_network(ft)
    x, t, y = probe()
    for w in (1.5, 3.0, 5.0):
        cfg = build_guided_denoiser("cfg", ft, guide, scale=w)
        dog = build_guided_denoiser("dog", ft, guide, scale=w)
        torch.testing.assert_close(cfg(x, t, y), dog(x, t, y), rtol=1e-12, atol=1e-12)
    labels = torch.tensor([0, 1]).repeat_interleave(50)
    torch.testing.assert_close(sample_points(cfg, labels, 1, steps=20), sample_points(dog, labels, 1, steps=20),
                               rtol=1e-10, atol=1e-10)


def test_learned_dog_equals_cfg_when_the_guide_is_the_fine_tuned_function(scenario):
    """Same wiring on networks: a guide computing the fine-tuned function makes DoG = CFG."""
    cfg_ = ToyConfig(finetune_steps=5, hidden=16, depth=1)
    pre = ToyMLP(scenario.num_source_classes, hidden=16, depth=1)
    ft_net, _ = finetune(pre, scenario, cfg_, seed=0)
    ft = MLPDenoiser(ft_net, "ft")
    twin = MLPDenoiser(copy.deepcopy(ft_net), "twin")  # separate object: the DoG path makes two calls
    x, t, y = probe()
    for w in (1.0, 3.0):
        cfg = build_guided_denoiser("cfg", ft, None, scale=w)(x, t, y)
        dog = build_guided_denoiser("dog", ft, twin, scale=w)(x, t, y)
        torch.testing.assert_close(cfg, dog, rtol=1e-5, atol=1e-5)


def test_finetune_replaces_the_label_table_and_keeps_the_rest(scenario):
    cfg_ = ToyConfig(finetune_steps=3, hidden=16, depth=1)
    pre = ToyMLP(scenario.num_source_classes, hidden=16, depth=1)
    before = copy.deepcopy(pre.state_dict())
    ft, losses = finetune(pre, scenario, cfg_, seed=0)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert ft.label_table.weight.shape == (scenario.num_target_classes + 1, 16)
    assert pre.label_table.weight.shape == (scenario.num_source_classes + 1, 16)
    for k, v in pre.state_dict().items():  # the pre-trained network is untouched (frozen guide)
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    den = MLPDenoiser(ft)
    assert den.null_label == scenario.num_target_classes and not den.net.training
    with pytest.raises(ValueError, match="out of range"):
        den(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.tensor([3]))
