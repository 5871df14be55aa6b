"""Official .pt (raw and training), our safetensors formats, config inference, error messages."""
from __future__ import annotations

import argparse
import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from domain_guidance.core.models import DiT, DiTConfig, dit_config
from domain_guidance.io import checkpoints as ck
from domain_guidance.io.checkpoint_files import CheckpointError, checkpoint_sha256, sha256_file
from domain_guidance.io.checkpoint_formats import infer_config, meta_dit
from tests.core.helpers import tiny_dit
from tests.io.checkpoint_helpers import assert_same_weights, inputs


def test_official_raw_pt_roundtrip(tmp_path):
    net = tiny_dit()
    path = tmp_path / "DiT-T-2-8x8.pt"
    torch.save(net.state_dict(), path)
    got = ck.load_model(path)
    loaded, cfg = got.net, got.config
    assert got.format == "dit-raw" and cfg == net.config and got.which is None and got.path == path
    assert cfg.null_label == 10 and not loaded.training
    assert_same_weights(loaded, net)
    x, t, y = inputs(cfg)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), net(x, t, y))
    torch.save(tiny_dit(seed=9).state_dict(), path)  # rewritten in place: the loaded model must not change
    assert_same_weights(loaded, net)


def _train_ckpt(path, model_name="DiT-T/2", prefix=""):
    ema, model = tiny_dit(seed=0), tiny_dit(seed=1)
    opt = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    x, t, y = inputs(model.config)
    model(x, t, y).square().mean().backward()
    opt.step()
    args = argparse.Namespace(model=model_name, image_size=64, num_classes=10, global_seed=0, results_dir="results")
    torch.save({"model": {prefix + k: v for k, v in model.state_dict().items()}, "ema": ema.state_dict(),
                "opt": opt.state_dict(), "args": args}, path)
    return ema, model


def test_training_checkpoint_ema_and_model(tmp_path):
    path = tmp_path / "0024000.pt"
    ema, model = _train_ckpt(path, prefix="module.")  # DDP prefix on 'model' is stripped
    got = ck.load_model(path)
    assert got.format == "dit-train" and got.which == "ema"
    assert got.details["args"]["model"] == "DiT-T/2" and sorted(got.details["keys"]) == ["args", "ema", "model", "opt"]
    assert_same_weights(got.net, ema)
    got_model = ck.load_model(path, which="model")
    assert got_model.which == "model"
    assert_same_weights(got_model.net, model)
    with pytest.raises(CheckpointError, match="which='opt_ema' is not a weight set; expected 'ema' or 'model'"):
        ck.load_model(path, which="opt_ema")
    torch.save({"ema": ema.state_dict(), "args": None}, path)
    with pytest.raises(CheckpointError, match="training checkpoint has no 'model' weights"):
        ck.load_model(path, which="model")


def test_sit_checkpoints_are_velocity(tmp_path):
    path = tmp_path / "sit.pt"
    _train_ckpt(path, model_name="SiT-T/2")
    assert ck.load_model(path).config.prediction == "velocity"  # from args.model
    raw = tmp_path / "raw.pt"
    torch.save(tiny_dit().state_dict(), raw)
    assert ck.load_model(raw).config.prediction == "eps"  # indistinguishable by shapes: caller says so
    assert ck.load_model(raw, prediction="velocity").config.prediction == "velocity"


@pytest.mark.parametrize("name", ["ckpt", "ckpt.safetensors"])
def test_ours_roundtrip(tmp_path, name):
    cfg = dit_config("T/4", input_size=16, num_classes=7, prediction="velocity", latent=False, vae=None,
                     class_dropout_prob=0.2, extra={"note": "x"})
    torch.manual_seed(3)
    net = DiT(cfg)
    path = ck.save_model(tmp_path / name, net, metadata={"step": 1200, "parent_sha256": "ab" * 32})
    got = ck.load_model(path)
    assert got.config == cfg and got.metadata == {"step": 1200, "parent_sha256": "ab" * 32} and got.which is None
    assert_same_weights(got.net, net)
    if name.endswith(".safetensors"):
        assert got.format == "safetensors"
        side = json.loads((tmp_path / "ckpt.json").read_text())
        assert DiTConfig.from_dict(side["config"]) == cfg and side["metadata"]["step"] == 1200
    else:
        assert got.format == "dir"
        assert sorted(p.name for p in path.iterdir()) == ["config.json", "metadata.json", "model.safetensors"]
        assert DiTConfig.from_dict(json.loads((path / "config.json").read_text())) == cfg


def test_bare_safetensors_infers_config(tmp_path):
    net = tiny_dit()
    save_file(net.state_dict(), tmp_path / "official.safetensors")
    got = ck.load_model(tmp_path / "official.safetensors")
    assert got.config == net.config
    assert_same_weights(got.net, net)


@pytest.mark.parametrize("cfg", [
    dit_config("S/4", input_size=16, num_classes=5, learn_sigma=False),
    dit_config("M/8", input_size=32, num_classes=3, in_channels=3),
    dit_config("T/2", input_size=(8, 8), num_classes=1),
])
def test_infer_config_from_shapes(cfg):
    sd = meta_dit(cfg).state_dict()
    assert infer_config(sd) == cfg.replace(input_size=cfg.grid_hw_pixels[0])


def test_infer_config_options():
    cfg = DiTConfig(input_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=4, null_class=False,
                    class_dropout_prob=0.0)
    sd = meta_dit(cfg).state_dict()
    with pytest.raises(CheckpointError, match="pass num_heads"):
        infer_config(sd)
    assert infer_config(sd, num_heads=2, null_class=False) == cfg
    assert infer_config(sd, num_heads=2).num_classes == 3  # default reading: last row is the null label


def test_xl2_shapes_match_research_table():
    # docs/protocols.md section 4: key -> shape of the official DiT-XL-2-256x256.pt
    table = {
        "pos_embed": (1, 256, 1152), "x_embedder.proj.weight": (1152, 4, 2, 2), "x_embedder.proj.bias": (1152,),
        "t_embedder.mlp.0.weight": (1152, 256), "t_embedder.mlp.2.weight": (1152, 1152),
        "y_embedder.embedding_table.weight": (1001, 1152), "blocks.0.attn.qkv.weight": (3456, 1152),
        "blocks.27.attn.proj.weight": (1152, 1152), "blocks.13.mlp.fc1.weight": (4608, 1152),
        "blocks.0.mlp.fc2.weight": (1152, 4608), "blocks.27.adaLN_modulation.1.weight": (6912, 1152),
        "final_layer.adaLN_modulation.1.weight": (2304, 1152), "final_layer.linear.weight": (32, 1152),
    }
    sd = meta_dit(dit_config("DiT-XL/2")).state_dict()  # meta device: no 675M allocation
    assert {k: tuple(sd[k].shape) for k in table} == table
    assert "blocks.28.attn.qkv.weight" not in sd and not any("norm" in k for k in sd)  # LayerNorms: no params
    assert sum(v.numel() for v in sd.values()) == 675_129_632  # DiT's printed count (pos_embed included)
    assert infer_config(sd) == dit_config("DiT-XL/2")


def test_errors_name_keys_shapes_and_file(tmp_path):
    net = tiny_dit()
    sd = net.state_dict()
    bad = dict(sd)
    del bad["blocks.1.mlp.fc2.bias"]
    bad["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as e:
        ck.load_model(path)
    msg = str(e.value)
    assert str(path) in msg and "missing keys (1): blocks.1.mlp.fc2.bias [64]" in msg
    assert "unexpected keys (1): extra.weight [3]" in msg
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        ck.load_model(path, config=net.config.replace(num_classes=12))
    assert "y_embedder.embedding_table.weight expected [13, 64] found [11, 64]" in str(e.value)
    assert str(path) in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        ck.load_model(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="hub ids are not downloaded"):
        ck.load_model("facebook/DiT-XL-2-256")
    torch.save({"weights": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="not a DiT checkpoint"):
        ck.load_model(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read as a torch checkpoint"):
        ck.load_model(path)
    torch.save(sd, path)
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    with pytest.raises(CheckpointError, match="cannot read as a torch checkpoint"):
        ck.load_model(path)


EXECUTED: list[str] = []


def _side_effect(arg):  # what a malicious pickle would run
    EXECUTED.append(arg)
    return arg


class Gadget:
    def __reduce__(self):
        return (_side_effect, ("pwned",))


@pytest.mark.parametrize("zipped", [True, False])
def test_unsafe_pickle_is_refused(tmp_path, zipped):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(a=1), "x": Gadget()}, path,
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as e:
        ck.load_model(path)
    assert str(path) in str(e.value) and "_side_effect" in str(e.value) and "unsafe pickle" in str(e.value)
    assert EXECUTED == []
    # argparse.Namespace alone is allowlisted, in both serialization formats
    ok = tmp_path / "ok.pt"
    torch.save({"ema": tiny_dit().state_dict(), "args": argparse.Namespace(model="DiT-T/2")}, ok,
               _use_new_zipfile_serialization=zipped)
    assert ck.load_model(ok).details["args"] == {"model": "DiT-T/2"}


def test_sha256(tmp_path):
    f = tmp_path / "a.bin"
    data = bytes(range(256)) * 5000
    f.write_bytes(data)
    assert sha256_file(f, chunk_size=1000) == hashlib.sha256(data).hexdigest()
    d = ck.save_model(tmp_path / "ck", tiny_dit())
    h = checkpoint_sha256(d)
    assert h == checkpoint_sha256(d)
    ck.save_model(d, tiny_dit(seed=5))
    assert checkpoint_sha256(d) != h


def test_convert_official_to_ours_records_provenance(tmp_path):
    net = tiny_dit()
    src = tmp_path / "official.pt"
    torch.save(net.state_dict(), src)
    dst = ck.convert_checkpoint(src, tmp_path / "ours", metadata={"step": 0})
    got = ck.load_model(dst)
    assert_same_weights(got.net, net)
    origin = got.metadata["converted_from"]
    assert origin["format"] == "dit-raw" and origin["sha256"] == sha256_file(src) and got.metadata["step"] == 0
    assert "weights" not in got.metadata  # an official release does not say which set it is
