"""w-conditioning (single-pass models): absent when off, zero effect when fresh, a real input once trained."""
import pytest
import torch

from domain_guidance.core.models import DiT, dit_config
from domain_guidance.core.models.dit import FixedW
from domain_guidance.io.checkpoints import load_model, save_checkpoint

from .helpers import tiny_dit


def test_w_embed_off_keeps_the_base_layout_and_record():
    cfg = dit_config("T/2", input_size=8)
    net = DiT(cfg)
    torch.manual_seed(0)
    ref_keys = list(DiT(cfg).state_dict())
    assert list(net.state_dict()) == ref_keys
    assert not any(k.startswith("w_embedder") for k in ref_keys)
    assert "w_embed" not in cfg.to_dict()  # the record (and its hashes) of an ordinary model is unchanged
    on = dit_config("T/2", input_size=8, w_embed=True)
    assert on.to_dict()["w_embed"] is True
    torch.manual_seed(0)
    a = DiT(cfg)
    torch.manual_seed(0)
    b = DiT(on)
    sd_b = b.state_dict()
    assert set(sd_b) - set(a.state_dict()) == {"w_embedder.mlp.0.weight", "w_embedder.mlp.0.bias",
                                               "w_embedder.mlp.2.weight", "w_embedder.mlp.2.bias"}
    assert all(torch.equal(v, sd_b[k]) for k, v in a.state_dict().items())  # same random draws for the base part


def test_fresh_embedder_changes_nothing_and_trained_one_does(tmp_path):
    net = tiny_dit()
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 4, 8, 8, generator=g), torch.tensor([10, 500, 990]), torch.tensor([1, 2, 3])
    plain = net(x, t, y)
    net.add_w_embedder()
    assert net.config.w_embed
    w = torch.tensor([1.0, 2.0, 4.0])
    assert torch.equal(net(x, t, y, w), plain)
    with torch.no_grad():
        net.w_embedder.mlp[2].weight.normal_(0, 0.5)
    out = net(x, t, y, w)
    assert not torch.allclose(out, plain)
    assert torch.equal(net(x, t, y), plain)  # w=None: the embedder is left out (how a guide call sees it)
    torch.testing.assert_close(FixedW(net, 2.0)(x, t, y), net(x, t, y, torch.full((3,), 2.0)), rtol=0, atol=0)
    save_checkpoint(tmp_path / "m", net, net.config)
    loaded = load_model(tmp_path / "m")
    assert loaded.config.w_embed
    torch.testing.assert_close(loaded.net(x, t, y, w), out, rtol=0, atol=0)


def test_w_without_embedder_is_refused():
    net = tiny_dit()
    with pytest.raises(ValueError, match="no w embedder"):
        net(torch.zeros(1, 4, 8, 8), torch.tensor([1]), torch.tensor([0]), torch.tensor([2.0]))
