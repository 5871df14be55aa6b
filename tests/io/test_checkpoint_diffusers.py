"""diffusers DiTTransformer2DModel folders -> official DiT layout."""
from __future__ import annotations

import json

import pytest
import torch

from domain_guidance.io import checkpoints as ck
from domain_guidance.io.checkpoint_files import CheckpointError, checkpoint_sha256
from domain_guidance.io.checkpoint_formats import diffusers_config_dict, official_to_diffusers
from tests.core.helpers import tiny_dit
from tests.io.checkpoint_helpers import assert_same_weights, inputs

from diffusers import DiTTransformer2DModel  # a hard dependency (pyproject): missing means a broken install


def tiny_diffusers(shared: bool = True) -> "DiTTransformer2DModel":
    torch.manual_seed(0)
    m = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8,
                              num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
        if shared:  # hub weights (converted from DiT) have identical per-block embedder copies
            for block in m.transformer_blocks[1:]:
                block.norm1.emb.load_state_dict(m.transformer_blocks[0].norm1.emb.state_dict())
    return m.eval()


def diffusers_out(m, x, t, y):
    with torch.no_grad():
        return m(x, timestep=t, class_labels=y).sample


def dit_like(m):
    """Patch diffusers' two non-weight differences to DiT's values (time frequencies, MLP LayerNorm eps)."""
    for block in m.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
        block.norm3.eps = 1e-6


def test_diffusers_folder_to_official(tmp_path):
    m = tiny_diffusers()
    m.save_pretrained(tmp_path / "transformer")
    loaded = ck.load_model(tmp_path / "transformer")
    net, cfg = loaded.net, loaded.config
    assert loaded.format == "diffusers" and loaded.notes and loaded.which is None
    assert (cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.input_size, cfg.patch_size) == (64, 2, 2, 8, 2)
    assert (cfg.num_classes, cfg.null_label, cfg.learn_sigma, cfg.mlp_ratio) == (10, 10, True, 4.0)
    sd = net.state_dict()
    dsd = m.state_dict()
    b = "transformer_blocks.1."
    assert torch.equal(sd["blocks.1.attn.qkv.weight"],
                       torch.cat([dsd[b + f"attn1.to_{n}.weight"] for n in "qkv"]))
    assert torch.equal(sd["final_layer.adaLN_modulation.1.bias"], dsd["proj_out_1.bias"])
    assert torch.equal(sd["pos_embed"], m.pos_embed.pos_embed)  # diffusers' non-persistent sin-cos table
    x, t, y = inputs(cfg, n=4)
    with torch.no_grad():
        ours = net(x, t, y)
    # Same weights, slightly different function: diffusers' timestep frequencies and MLP LayerNorm eps.
    diff_default = (ours - diffusers_out(m, x, t, y)).abs().max().item()
    assert 1e-4 < diff_default < 0.5
    dit_like(m)
    assert (ours - diffusers_out(m, x, t, y)).abs().max().item() < 1e-5  # the mapping itself is exact


def test_disagreeing_embedder_copies_are_refused(tmp_path):
    tiny_diffusers(shared=False).save_pretrained(tmp_path / "t")
    with pytest.raises(CheckpointError, match=r"per-block copies of norm1\.emb\.timestep_embedder\.linear_1\.weight "
                                              r"disagree \(block 1 vs block 0"):
        ck.load_model(tmp_path / "t")


def test_official_diffusers_official_is_bit_exact(tmp_path):
    net = tiny_dit()
    cfg = net.config
    dconf = diffusers_config_dict(cfg)
    m = DiTTransformer2DModel(**{k: v for k, v in dconf.items() if not k.startswith("_")})
    m.load_state_dict(official_to_diffusers(net.state_dict(), cfg), strict=True)
    m.eval()
    pipe = tmp_path / "pipe"  # a pipeline folder: the transformer is in transformer/
    m.save_pretrained(pipe / "transformer")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    back = ck.load_model(pipe)
    assert back.config == cfg and back.path == pipe / "transformer"
    assert_same_weights(back.net, net)
    x, t, y = inputs(cfg)
    dit_like(m)
    with torch.no_grad():
        assert (net(x, t, y) - diffusers_out(m, x, t, y)).abs().max().item() < 1e-5
    ours = ck.convert_checkpoint(pipe, tmp_path / "ours")
    got = ck.load_model(ours)
    assert_same_weights(got.net, net)
    assert got.metadata["converted_from"]["sha256"] == checkpoint_sha256(pipe / "transformer")


def test_diffusers_config_refusals(tmp_path):
    m = tiny_diffusers()
    m.save_pretrained(tmp_path / "t")
    conf = json.loads((tmp_path / "t" / "config.json").read_text())
    conf["activation_fn"] = "geglu"
    (tmp_path / "t" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match="activation_fn='geglu' has no DiT equivalent"):
        ck.load_model(tmp_path / "t")
