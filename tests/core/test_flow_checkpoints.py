"""SiT checkpoints through the flow samplers: the official raw layout (a DiT state dict whose learned-sigma
half is present but unused) with the prediction type declared, and a SiT training checkpoint (inferred)."""
import argparse

import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.models import DiT, dit_config
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.checkpoints import load_model, retarget

pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS, LABELS = [4, 8], torch.tensor([3, 7])


def _sit(seed: int = 0) -> DiT:
    """A tiny SiT in the official layout: 10 classes + null, learn_sigma (final layer 2 x 4 channels)."""
    cfg = dit_config("SiT-T/2", input_size=8, num_classes=10)  # registry size: the loader infers it
    assert cfg.prediction == "velocity" and cfg.learn_sigma and cfg.out_channels == 8
    torch.manual_seed(seed)
    net = DiT(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.05)
    return net.eval()


def _draw(denoiser, sampler="ode-heun"):
    return sample_from_seeds(denoiser, SEEDS, LABELS, (4, 8, 8), sampler=sampler, steps=4)


def test_official_raw_sit_layout_loads_with_declared_velocity(tmp_path):
    net = _sit()
    raw = tmp_path / "SiT-T-2-8x8.pt"
    torch.save(net.state_dict(), raw)  # like SiT-XL-2-256x256.pt: a plain dict of tensors
    assert set(torch.load(raw, weights_only=True)) == set(net.state_dict())
    reference = _draw(Denoiser(net, net.config))

    undeclared = load_model(raw)  # raw weights cannot say what they predict
    assert undeclared.config.prediction == "eps"
    with pytest.raises(ValueError, match="integrates velocity predictions, but the model predicts 'eps'"):
        _draw(Denoiser(undeclared.net, undeclared.config))

    loaded = load_model(raw, prediction="velocity")
    assert loaded.format == "dit-raw" and loaded.config.prediction == "velocity" and loaded.config.learn_sigma
    torch.testing.assert_close(_draw(Denoiser(loaded.net, loaded.config)), reference, atol=0, rtol=0)

    x, t = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.7])
    with torch.no_grad():  # the learned-sigma half (rows of channels 4..7 of the final linear layer) is unused
        before = loaded.net(x, t, LABELS)
        w = loaded.net.final_layer.linear.weight.view(2, 2, 8, -1)  # (p, p, out_channels, hidden)
        w[:, :, 4:] += 1.0
        after = loaded.net(x, t, LABELS)
    assert torch.equal(after[:, :4], before[:, :4]) and (after[:, 4:] - before[:, 4:]).abs().amax() > 0.1
    torch.testing.assert_close(_draw(Denoiser(loaded.net, loaded.config)), reference, atol=0, rtol=0)


def test_sit_training_checkpoint_infers_velocity_and_guides_a_sit_finetune(tmp_path):
    base, ema = _sit(seed=1), _sit(seed=2)
    path = tmp_path / "0100000.pt"
    torch.save({"model": base.state_dict(), "ema": ema.state_dict(), "opt": {},
                "args": argparse.Namespace(model="SiT-T/2", image_size=64, num_classes=10)}, path)
    loaded = load_model(path)  # which="ema"
    assert loaded.config.prediction == "velocity" and loaded.which == "ema"
    torch.testing.assert_close(_draw(Denoiser(loaded.net, loaded.config), "sde-euler"),
                               _draw(Denoiser(ema, ema.config), "sde-euler"), atol=0, rtol=0)

    ft_net, ft_cfg = retarget(loaded.net, loaded.config, num_classes=3, null_class=True, class_dropout_prob=0.1, seed=0)
    assert ft_cfg.prediction == "velocity" and ft_cfg.null_label == 3
    ft, guide = Denoiser(ft_net, ft_cfg), Denoiser(loaded.net, loaded.config)
    labels = torch.tensor([0, 2])
    dog = sample_from_seeds(build_guided_denoiser("dog", ft, guide, scale=2.0), SEEDS, labels, (4, 8, 8),
                            sampler="ode-euler", steps=3)
    plain = sample_from_seeds(build_guided_denoiser("unguided", ft), SEEDS, labels, (4, 8, 8), sampler="ode-euler",
                              steps=3)
    assert torch.isfinite(dog).all() and (dog - plain).abs().amax() > 1e-3

    dit = DiT(dit_config("T/2", input_size=8, num_classes=10)).eval()
    with pytest.raises(ValueError, match=r"a flow-matching \(SiT, velocity\) model cannot be guided by a diffusion"):
        build_guided_denoiser("dog", ft, Denoiser(dit, dit.config))
