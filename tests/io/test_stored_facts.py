"""A stored fact wins over a declaration (issue 20, family 3): every format's stored facts, one rule.

A checkpoint that states what it is (a stored config, diffusers' config.json, a training ``.pt``'s
``args.model``, a file's ``weights`` entry) cannot be read as something else by a declaration; the
contradiction is an error naming both. Only a training initialisation says ``base_reinterpret=true``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.core.models import DiT, dit_config
from domain_guidance.io import checkpoints as ck
from domain_guidance.io.checkpoint_files import CheckpointError
from domain_guidance.io.checkpoint_formats import diffusers_config_dict, official_to_diffusers

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(prediction: str = "eps") -> DiT:
    torch.manual_seed(0)
    return DiT(dit_config("T/2", input_size=8, in_channels=1, num_classes=3,
                          latent=False, vae=None, prediction=prediction)).eval()


def _formats(root: Path) -> dict[str, tuple[Path, dict]]:
    """One checkpoint per format that stores facts: path -> (a fact it states, as declared overrides)."""
    vel, eps = _net("velocity"), _net("eps")
    out = {"dir": (ck.save_checkpoint(root / "dir", vel, vel.config), {"prediction": "velocity"}),
           "safetensors": (ck.save_checkpoint(root / "one.safetensors", eps, eps.config), {"prediction": "eps"})}
    side = root / "side.safetensors"  # a bare file whose config lives only in the sidecar JSON
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in vel.state_dict().items()}, str(side))
    side.with_suffix(".json").write_text(json.dumps({"config": vel.config.to_dict()}))
    out["sidecar"] = (side, {"prediction": "velocity"})
    sit = root / "sit-train.pt"
    torch.save({"ema": vel.state_dict(), "model": vel.state_dict(), "args": argparse.Namespace(model="SiT-T/2")}, sit)
    out["dit-train args"] = (sit, {"prediction": "velocity"})
    diff = root / "diffusers"
    diff.mkdir()
    (diff / "config.json").write_text(json.dumps(diffusers_config_dict(eps.config)))
    torch.save(official_to_diffusers(eps.state_dict(), eps.config), diff / "diffusion_pytorch_model.bin")
    out["diffusers"] = (diff, {"num_classes": 3})
    return out


def test_every_stored_fact_beats_a_contradicting_declaration(tmp_path):
    """The mechanism, walked over every format: agree -> loads; contradict -> error naming both; reinterpret -> recorded."""
    contradicting = {"prediction": {"eps": "velocity", "velocity": "eps"}, "num_classes": {3: 5}}
    for fmt, (path, facts) in _formats(tmp_path).items():
        (name, stored), = facts.items()
        assert getattr(ck.load_model(path, **facts).config, name) == stored, fmt  # an agreeing declaration
        other = contradicting[name][stored]
        with pytest.raises(CheckpointError) as e:
            ck.load_model(path, **{name: other})
        msg = str(e.value)
        assert f"{name}={other!r} was declared, but the checkpoint says {name}={stored!r}" in msg, (fmt, msg)
        assert str(path) in msg and "stored fact wins" in msg, fmt
        if name == "prediction":  # a training initialisation may re-read it, and it is recorded
            got = ck.load_model(path, reinterpret=True, **{name: other})
            assert got.config.prediction == other, fmt
            assert got.details["reinterpreted"] == {name: {"stored": stored, "as": other}}, fmt


def test_raw_weights_store_no_prediction_so_a_declaration_is_needed(tmp_path):
    """Official raw .pt files say nothing about what they predict: declaring either is allowed."""
    raw = tmp_path / "raw.pt"
    torch.save(_net().state_dict(), raw)
    assert ck.load_model(raw).config.prediction == "eps"
    assert ck.load_model(raw, prediction="velocity").config.prediction == "velocity"
    assert "reinterpreted" not in ck.load_model(raw, prediction="velocity").details


@pytest.mark.parametrize("stored, declared", [("velocity", "eps"), ("eps", "velocity")])
def test_dog_sample_prediction_contradicting_the_checkpoint_is_refused(tmp_path, capsys, stored, declared):
    """Regression: `--prediction eps` on a velocity checkpoint (and the reverse) sampled with the wrong maths."""
    net = _net(stored)
    model = ck.save_checkpoint(tmp_path / "m", net, net.config)
    code = main(["sample", "--model", str(model), "--prediction", declared, "--method", "unguided",
                 "--sampler", "ode-euler" if stored == "velocity" else "ddim", "--steps", "2", "--seeds", "0-1",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"prediction={declared!r} was declared, but the checkpoint says prediction={stored!r}" in err
    assert not (tmp_path / "out" / "samples.npz").exists()


def test_which_model_on_a_single_file_holding_ema_weights_is_refused(tmp_path, capsys):
    """Regression: `--which model` on a .safetensors whose metadata says `weights: ema` silently used EMA."""
    net = _net()
    path = ck.save_checkpoint(tmp_path / "ema.safetensors", net, net.config, {"weights": "ema"})
    assert ck.load_model(path).which == "ema"
    with pytest.raises(CheckpointError, match=r"which='model' asks for the raw \(non-EMA\) weights, but this "
                                              r"checkpoint holds only 'ema' weights \(ema.safetensors\)"):
        ck.load_model(path, which="model")
    code = main(["sample", "--model", str(path), "--which", "model", "--method", "unguided", "--steps", "2",
                 "--seeds", "0-1", "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2 and "holds only 'ema' weights" in capsys.readouterr().err


def test_training_init_reinterprets_only_when_it_says_so(tmp_path):
    """base_prediction contradicting the base's stored one is refused; base_reinterpret=true allows it."""
    from domain_guidance.pipelines.training import resolve_config
    from domain_guidance.pipelines.training.model import load_base

    net = _net("eps")
    base = ck.save_checkpoint(tmp_path / "base", net, net.config)
    sets = [f"base={base}", "data.dataset=digits", f"out={tmp_path / 'run'}", "base_prediction=velocity"]
    with pytest.raises(CheckpointError, match="prediction='velocity' was declared, but the checkpoint says "
                                              "prediction='eps'.*base_reinterpret=true"):
        load_base(resolve_config(None, sets=sets))
    _, cfg, _, _ = load_base(resolve_config(None, sets=sets + ["base_reinterpret=true"]))
    assert cfg.prediction == "velocity"
    with pytest.raises(ValueError, match="base_reinterpret=true re-reads the base as base_prediction, but "
                                         "base_prediction is 'auto'"):
        resolve_config(None, sets=[f"base={base}", "data.dataset=digits", "base_reinterpret=true"])
