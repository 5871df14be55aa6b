"""Label-table surgery and LoRA checkpoints."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.models.adapters import add_lora, adapter_disabled, dual_label_embedder
from domain_guidance.io import checkpoints as ck
from domain_guidance.io.checkpoint_files import CheckpointError, sha256_file
from tests.core.helpers import tiny_dit
from tests.io.checkpoint_helpers import assert_same_weights, inputs


def _storages(module):
    return {t.untyped_storage().data_ptr() for t in module.state_dict().values()}


def test_retarget_leaves_the_guide_intact():
    guide = tiny_dit()
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    x, t, y = inputs(guide.config)
    with torch.no_grad():
        guide_out = guide(x, t, y)
    ft, ft_cfg = ck.retarget(guide, num_classes=5, seed=3)
    assert (ft_cfg.num_classes, ft_cfg.null_label, ft_cfg.class_dropout_prob) == (5, 5, 0.1)
    table = ft.y_embedder.embedding_table.weight
    assert table.shape == (6, 64) and 0.015 < table.std().item() < 0.025
    assert torch.equal(table, ck.retarget(guide, num_classes=5, seed=3)[0].y_embedder.embedding_table.weight)
    assert not torch.equal(table, ck.retarget(guide, num_classes=5, seed=4)[0].y_embedder.embedding_table.weight)
    for k, v in ft.state_dict().items():
        if k != "y_embedder.embedding_table.weight":
            assert torch.equal(v, before[k]), k
    assert not (_storages(ft) & _storages(guide))  # nothing shared that training could modify
    ft.train()
    opt = torch.optim.SGD([p for p in ft.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):
        opt.zero_grad()
        ft(x, t, torch.tensor([0, 4, 5])).square().mean().backward()
        opt.step()
    assert not torch.equal(ft.blocks[0].attn.qkv.weight, before["blocks.0.attn.qkv.weight"])
    assert_same_weights(guide, before)  # bit-identical
    assert guide.config.null_label == 10 and guide.y_embedder.embedding_table.weight.shape[0] == 11
    with torch.no_grad():
        assert torch.equal(guide(x, t, y), guide_out)  # y includes the guide's own null label 10


def test_retarget_from_state_dict_without_null():
    guide = tiny_dit()
    ft, cfg = ck.retarget(guide.state_dict(), guide.config, num_classes=3, null_class=False)
    assert cfg.null_label is None and cfg.class_dropout_prob == 0.0
    assert ft.y_embedder.embedding_table.weight.shape == (3, 64)
    ft2, _ = ck.retarget(guide.state_dict(), num_classes=3, null_class=False)  # config inferred
    assert_same_weights(ft, ft2)


def _lora_model(base_path, num_classes=5):
    loaded = ck.load_model(base_path)
    base, base_cfg = loaded.net, loaded.config
    target_cfg = base_cfg.replace(num_classes=num_classes, class_dropout_prob=0.0)
    model = add_lora(base, target_cfg, rank=4, alpha=8, targets=("attn.qkv", "mlp.fc1", "final_layer.linear"))
    with torch.no_grad():  # pretend training happened: lora_B starts at zero
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model.eval(), base_cfg, target_cfg


def test_lora_roundtrip(tmp_path):
    base_path = tmp_path / "DiT-T-2.pt"
    torch.save(tiny_dit().state_dict(), base_path)
    model, base_cfg, target_cfg = _lora_model(base_path)
    out = ck.save_model(tmp_path / "lora", model, target_cfg, metadata={"step": 10}, base=base_path)
    assert sorted(p.name for p in out.iterdir()) == ["lora.json", "lora.safetensors"]
    with safe_open(out / "lora.safetensors", "pt") as f:
        keys = set(f.keys())
    assert all("lora_" in k for k in keys - {ck.TABLE_KEY}) and ck.TABLE_KEY in keys
    assert len(keys) == 2 * (2 * 2 + 1) + 1  # A and B of (2 blocks x 2 targets + final linear) + table

    loaded = ck.load_model(out)
    got = loaded.net
    assert loaded.config == target_cfg and loaded.base_config == base_cfg and loaded.format == "lora"
    assert loaded.details["lora"] == {"rank": 4, "alpha": 8, "targets": ["attn.qkv", "final_layer.linear", "mlp.fc1"],
                                      "dropout": 0.0}
    assert loaded.details["base"]["sha256"] == sha256_file(base_path) and loaded.metadata == {"step": 10}
    assert loaded.base_path == base_path and loaded.path == out and loaded.which is None
    x, t, _ = inputs(base_cfg)
    y_ft = torch.tensor([0, 4, 5])
    with torch.no_grad():
        assert torch.equal(got(x, t, y_ft), model(x, t, y_ft))
        with adapter_disabled(got), adapter_disabled(model):
            assert torch.equal(got(x, t, torch.tensor([0, 9, 10])), model(x, t, torch.tensor([0, 9, 10])))
    assert torch.equal(dual_label_embedder(got).target.embedding_table.weight,
                       dual_label_embedder(model).target.embedding_table.weight)
    guide = Denoiser(got, loaded.base_config, adapter=False)
    assert guide.null_label == 10  # the guide keeps the pre-trained null label


def test_lora_base_provenance(tmp_path):
    base_path = tmp_path / "base.pt"
    torch.save(tiny_dit().state_dict(), base_path)
    model, _, target_cfg = _lora_model(base_path)
    with pytest.raises(CheckpointError, match="needs base="):
        ck.save_model(tmp_path / "lora", model, target_cfg)
    out = ck.save_lora(tmp_path / "lora", model, base=base_path)  # target config read off the table
    moved = tmp_path / "elsewhere.pt"
    shutil.copyfile(base_path, moved)
    torch.save(tiny_dit(seed=7).state_dict(), base_path)  # the base file changes
    with pytest.raises(CheckpointError, match="sha256"):
        ck.load_lora(out)
    model2, base_cfg, target2, _ = ck.load_lora(out, verify_base=False)
    assert target2.num_classes == 5 and base_cfg.num_classes == 10
    ck.load_lora(out, base=moved)  # the original bytes elsewhere: the hash matches
