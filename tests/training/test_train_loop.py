"""The loop on digits: the loss falls; logs, config JSON, grid and sampling checkpoint are written."""
from __future__ import annotations

import json

import numpy as np
import torch
import pytest

from domain_guidance.io.checkpoints import load_model
from domain_guidance.pipelines.training import load_train_state, train
from domain_guidance.pipelines.training.logging import read_log

from .conftest import tiny_config


def test_loss_falls_on_digits(tmp_path):
    cfg = tiny_config(tmp_path / "run", "steps=60", "batch_size=16", "lr=3e-3", "data.classes=[0, 1]",
                      "sample_every=60", "grid.num=4", "grid.steps=4", "tensorboard=true", "ckpt_every=30")
    result = train(cfg)
    losses = [r["loss"] for r in read_log(result.run_dir, "train")]
    assert len(losses) == 60 and all(np.isfinite(losses))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.6 * first, (first, last)  # starts near 1 (zero-initialised output): eps MSE falls
    # the run directory: resolved config, checkpoints with pointer, grid, TensorBoard, sampler-readable weights
    run = result.run_dir
    assert json.loads((run / "train_config.json").read_text())["steps"] == 60
    assert result.checkpoint == (run / "checkpoints" / "step_0000060")
    assert (run / "checkpoints" / "latest").resolve() == result.checkpoint.resolve()
    grid = json.loads((run / "grids" / "step_0000060.json").read_text())
    assert grid["rows"] == ["unguided", "cfg"] and (run / "grids" / "step_0000060.png").stat().st_size > 0
    assert any((run / "tb").iterdir())
    loaded = load_model(run / "checkpoints" / "latest")
    net, config = loaded.net, loaded.config
    assert loaded.which == "ema"
    assert config.num_classes == 2 and config.null_label == 2 and not config.latent
    state = load_train_state(result.checkpoint)
    assert state["step"] == 60 and state["data_position"] == 60 * 16
    for k, v in net.state_dict().items():  # the exported weights are the EMA weights
        assert np.array_equal(v.numpy(), state["ema"][k].numpy()), k


def test_refuses_to_overwrite_and_resume_past_the_end(tmp_path):
    cfg = tiny_config(tmp_path / "run", "steps=2")
    train(cfg)
    with pytest.raises(ValueError, match="already holds checkpoint step_0000002: pass --resume"):
        train(cfg)
    again = train(cfg, resume=True)  # nothing left to do
    assert again.step == 2 and any("nothing to do" in r.get("message", "") for r in read_log(cfg.out, "note"))
    changed = tiny_config(tmp_path / "run", "steps=4", "lr=1e-2")
    with pytest.raises(ValueError, match="lr: checkpoint 0.001, now 0.01"):
        train(changed, resume=True)


def test_bf16_autocast_and_gradient_checkpointing_on_cpu(tmp_path):
    cfg = tiny_config(tmp_path / "run", "steps=3", "precision=bf16", "gradient_checkpointing=true")
    result = train(cfg)
    start = read_log(result.run_dir, "start")[0]
    assert start["bf16"] is True and np.isfinite(result.last_loss)
    state = load_train_state(result.checkpoint)
    assert all(v.dtype == torch.float32 for v in state["model"].values())  # weights stay fp32 under autocast
