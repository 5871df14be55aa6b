import pytest
import torch

from domain_guidance.core.models import DiT, DiTConfig, dit_config
from tests.core.helpers import tiny_dit

# (key, shape) of the official DiT-XL/2-256 checkpoint (docs/protocols.md section 4)
XL2_SHAPES = {
    "pos_embed": (1, 256, 1152),
    "x_embedder.proj.weight": (1152, 4, 2, 2),
    "t_embedder.mlp.0.weight": (1152, 256),
    "t_embedder.mlp.2.weight": (1152, 1152),
    "y_embedder.embedding_table.weight": (1001, 1152),
    "blocks.0.attn.qkv.weight": (3456, 1152),
    "blocks.27.attn.proj.weight": (1152, 1152),
    "blocks.0.mlp.fc1.weight": (4608, 1152),
    "blocks.0.mlp.fc2.weight": (1152, 4608),
    "blocks.0.adaLN_modulation.1.weight": (6912, 1152),
    "final_layer.adaLN_modulation.1.weight": (2304, 1152),
    "final_layer.linear.weight": (32, 1152),
}


def test_xl2_matches_official_layout():
    with torch.device("meta"):
        net = DiT(dit_config("DiT-XL/2"))
    sd = net.state_dict()
    for key, shape in XL2_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert "blocks.28.attn.qkv.weight" not in sd
    n_params = sum(p.numel() for p in net.parameters())
    assert 670e6 < n_params < 680e6
    assert not any("norm" in k for k in sd)  # LayerNorms have no parameters


# The DiT paper's Table 1 (Peebles & Xie 2023): layers, hidden size, heads; params in millions.
PUBLISHED = {"S": (12, 384, 6, 33), "B": (12, 768, 12, 130), "L": (24, 1024, 16, 458), "XL": (28, 1152, 16, 675)}


def dit_param_count(depth: int, d: int, patch: int, in_ch: int = 4, tokens: int = 256, classes: int = 1000,
                    learn_sigma: bool = True, freq: int = 256, mlp_ratio: int = 4) -> int:
    """Parameters of a DiT written out from the architecture (not from our modules), pos_embed included
    (the official train.py counts it: 675,129,632 for DiT-XL/2)."""
    out_ch = 2 * in_ch if learn_sigma else in_ch
    patch_embed = in_ch * patch * patch * d + d  # conv p x p, stride p
    pos_embed = tokens * d  # fixed sin-cos, stored as a parameter
    t_embed = freq * d + d + d * d + d  # MLP freq -> d -> d
    y_embed = (classes + 1) * d  # label table with the null row
    attn = (d * 3 * d + 3 * d) + (d * d + d)  # qkv + proj
    mlp = (d * mlp_ratio * d + mlp_ratio * d) + (mlp_ratio * d * d + d)  # fc1 + fc2
    ada = d * 6 * d + 6 * d  # adaLN-Zero: shift/scale/gate for attn and mlp
    final = (d * 2 * d + 2 * d) + (d * patch * patch * out_ch + patch * patch * out_ch)
    return patch_embed + pos_embed + t_embed + y_embed + depth * (attn + mlp + ada) + final


@pytest.mark.parametrize("size", ["S", "B", "L", "XL"])
def test_size_registry_matches_published_table(size):
    depth, hidden, heads, millions = PUBLISHED[size]
    for patch in (2, 4, 8):
        cfg = dit_config(f"DiT-{size}/{patch}")
        assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size) == (depth, hidden, heads, patch)
        assert (cfg.input_size, cfg.in_channels, cfg.num_classes, cfg.mlp_ratio) == (32, 4, 1000, 4.0)
    expected = dit_param_count(depth, hidden, 2)
    assert abs(expected / 1e6 - millions) < 0.6, expected  # the paper rounds: S 32.96M, B 130.51M, L 458.10M
    with torch.device("meta"):
        net = DiT(dit_config(f"DiT-{size}/2"))
    assert sum(p.numel() for p in net.parameters()) == expected


def test_xl2_parameter_count_is_the_official_one():
    assert dit_param_count(28, 1152, 2) == 675_129_632  # "DiT Parameters: 675,129,632" (official train.py log)
    with torch.device("meta"):
        net = DiT(dit_config("DiT-XL/4"))  # patch 4: 64 tokens, 4*4*4 inputs and 4*4*8 outputs per token
    assert sum(p.numel() for p in net.parameters()) == dit_param_count(28, 1152, 4, tokens=64)


def test_unknown_size_error():
    with pytest.raises(ValueError, match="unknown model name"):
        dit_config("DiT-Q/2")


def test_forward_shapes_pixels_nonsquare_and_learned_sigma():
    net = tiny_dit(num_classes=3, input_size=(8, 12), in_channels=1, learn_sigma=False, latent=False)
    out = net(torch.randn(2, 1, 8, 12), torch.tensor([0, 999]), torch.tensor([0, 3]))
    assert out.shape == (2, 1, 8, 12)
    net = tiny_dit(num_classes=3)
    assert net(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1])).shape == (2, 8, 8, 8)


def test_wrong_input_shape_error():
    net = tiny_dit()
    with pytest.raises(ValueError, match=r"does not match the model's \(N, 4, 8, 8\)"):
        net(torch.randn(1, 3, 8, 8), torch.tensor([1]), torch.tensor([0]))


def test_output_depends_on_each_token_position():
    """Patch order and unpatchify are inverse: a change in one input patch changes output everywhere
    (attention), and the identity-like output path keeps spatial layout."""
    net = tiny_dit()
    x = torch.randn(1, 4, 8, 8)
    y = x.clone()
    y[..., 0:2, 6:8] += 1.0
    t, lab = torch.tensor([10]), torch.tensor([1])
    assert (net(x, t, lab) - net(y, t, lab)).abs().amax(dim=(0, 1)).gt(0).all()


def test_label_dropout_only_in_train_mode():
    net = tiny_dit()
    x, t, y = torch.randn(64, 4, 8, 8), torch.full((64,), 5), torch.zeros(64, dtype=torch.long)
    null = net(x, t, torch.full((64,), 10))
    cond = net(x, t, y)
    net.train()
    net.y_embedder.dropout_prob = 0.5
    mixed = net(x, t, y)
    dropped = (mixed - null).abs().amax(dim=(1, 2, 3)) < 1e-6
    kept = (mixed - cond).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert dropped.any() and kept.any() and (dropped ^ kept).all()


def test_config_roundtrip_and_errors():
    cfg = dit_config("T/2", input_size=(8, 12), num_classes=7)
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DiT config keys"):
        DiTConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        dit_config("T/4", input_size=10)
    assert cfg.null_label == 7 and cfg.replace(null_class=False, class_dropout_prob=0).null_label is None
