"""DiffFit: factors off (or at their start values) is the base bit for bit; the merged export is the trained function."""
import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.models import DiT
from domain_guidance.core.models.difffit import DiffFit
from domain_guidance.io.checkpoints import load_model, save_checkpoint

from .helpers import tiny_dit


def _inputs(n=4, seed=0, classes=10):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, 8, 8, generator=g), torch.randint(0, 1000, (n,), generator=g),
            torch.randint(0, classes, (n,), generator=g))


def _perturb(model: DiffFit, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.bias_delta.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        model.gamma.copy_(1 + torch.randn(model.gamma.shape, generator=g) * 0.3)


def test_factors_off_is_bit_identical_to_the_base():
    base = tiny_dit()
    reference = tiny_dit()  # an independent copy of the same weights
    model = DiffFit(base, base.config.replace(num_classes=3))
    _perturb(model)
    x, t, y = _inputs()
    with model.factors_disabled():
        out = model(x, t, y)
    assert torch.equal(out, reference(x, t, y))
    assert model.factors_on  # restored
    assert not torch.equal(model(x, t, y % 3), out)  # the factors do change the function when on


def test_fresh_factors_with_the_base_table_compute_the_base_function_exactly():
    base = tiny_dit()
    model = DiffFit(base, base.config)
    with torch.no_grad():
        model.target_table.embedding_table.weight.copy_(base.y_embedder.embedding_table.weight)
    x, t, y = _inputs()
    assert torch.equal(model(x, t, y), tiny_dit()(x, t, y))


def test_trainable_parts_are_biases_gammas_and_table_only():
    base = tiny_dit()
    model = DiffFit(base, base.config.replace(num_classes=3))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("bias_delta.", "gamma", "target_table.")) for n in names)
    n_bias = sum(1 for n, _ in base.named_parameters() if n.endswith(".bias"))
    assert len([n for n in names if n.startswith("bias_delta.")]) == n_bias
    assert model.gamma.shape == (2, 2, 64)
    x, t, y = _inputs()
    model(x, t, y % 3).square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in base.parameters())


def test_merged_export_equals_the_trained_function(tmp_path):
    base = tiny_dit()
    model = DiffFit(base, base.config.replace(num_classes=3))
    _perturb(model)
    x, t, y = _inputs()
    y = y % 3
    expected = model(x, t, y)
    save_checkpoint(tmp_path / "merged", model.merged_state_dict(), model.config, {"mode": "difffit"})
    loaded = load_model(tmp_path / "merged")
    assert isinstance(loaded.net, DiT) and loaded.config.num_classes == 3
    torch.testing.assert_close(loaded.net(x, t, y), expected, rtol=0, atol=1e-6)
    # the gate rows really are scaled: gamma 1.3 on gate_msa of block 0 scales those rows by 1.3
    d = 64
    sd = model.merged_state_dict()
    w0 = tiny_dit().state_dict()["blocks.0.adaLN_modulation.1.weight"]
    ratio = sd["blocks.0.adaLN_modulation.1.weight"][2 * d:3 * d] / w0[2 * d:3 * d]
    torch.testing.assert_close(ratio, model.gamma[0, 0].detach()[:, None].expand_as(ratio), rtol=1e-5, atol=1e-6)


def test_guide_denoiser_of_a_difffit_model_is_the_base_network():
    base = tiny_dit()
    model = DiffFit(base, base.config.replace(num_classes=3))
    _perturb(model)
    guide = Denoiser(model.base, base.config)
    x, t, _ = _inputs()
    null = torch.full((4,), 10)
    assert torch.equal(guide(x, t, null), tiny_dit()(x, t, null))


def test_refuses_another_input_space_and_gradient_checkpointing():
    base = tiny_dit()
    with pytest.raises(ValueError, match="input space"):
        DiffFit(base, base.config.replace(in_channels=3))
    model = DiffFit(base, base.config).train()
    base.gradient_checkpointing = True
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        model(*_inputs())
