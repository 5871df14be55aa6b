"""Exact resume: 2N steps in one go == N steps + (hard kill) + resume; interrupted checkpoint writes; NaN stop."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.io.checkpoints import load_model
from domain_guidance.pipelines.training import NonFiniteLossError, find_latest, load_train_state, train
from domain_guidance.pipelines.training import state as state_mod
from domain_guidance.pipelines.training.logging import read_log

from .conftest import TINY_NET, run_cli, tiny_config

EXACT = ("lr=3e-3", "ema.decay=0.9", "grad_clip=0.5", "data.classes=[0, 1, 2]", "data.random_flip=true")


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-identical weights, EMA and optimizer state (moments and step counts)."""
    assert a["step"] == b["step"] and a["data_position"] == b["data_position"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), f"optimizer {i}.{k} differs"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


def test_resume_after_stop_is_bit_identical(tmp_path):
    one = train(tiny_config(tmp_path / "one", "steps=6", *EXACT))
    first = train(tiny_config(tmp_path / "two", "steps=3", *EXACT))  # stop after N = 3 ...
    assert first.step == 3
    second = train(tiny_config(tmp_path / "two", "steps=6", *EXACT), resume=True)  # ... and N more
    assert_same_state(load_train_state(one.checkpoint), load_train_state(second.checkpoint))
    logged = [r["step"] for r in read_log(tmp_path / "two", "train")]
    assert logged == [1, 2, 3, 4, 5, 6]  # one uninterrupted log


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """A real hard kill (SIGKILL after step 5's update; checkpoints every 3) in a subprocess, then resume."""
    killed = tmp_path / "killed"
    sets = [f"out={killed}", TINY_NET, "batch_size=8", "progress=false", "tensorboard=false", "sample_every=0",
            "log_every=1", "ckpt_every=3", "device=cpu", "steps=6", "debug_kill_at_step=5", *EXACT]
    proc = run_cli(["pretrain", "--preset", "cpu-tiny", "--set", *sets], timeout=120)
    assert proc.returncode == -9, proc.stdout[-2000:]
    assert find_latest(killed).name == "step_0000003"
    assert [r["step"] for r in read_log(killed, "train")][-1] == 5  # steps 4-5 ran and were lost
    resumed = train(tiny_config(killed, "steps=6", "ckpt_every=3", *EXACT), resume=True)
    one = train(tiny_config(tmp_path / "one", "steps=6", "ckpt_every=3", *EXACT))
    assert_same_state(load_train_state(one.checkpoint), load_train_state(resumed.checkpoint))
    assert [r["step"] for r in read_log(killed, "train")] == [1, 2, 3, 4, 5, 6]


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(run, "steps=2", "ckpt_every=2"))
    good = find_latest(run)
    real_write = state_mod._write_train_state

    def dies_half_way(state: dict, path: Path) -> None:
        real_write(state, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # half a file on disk, then the process "dies"
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(state_mod, "_write_train_state", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(run, "steps=4", "ckpt_every=2"), resume=True)
    monkeypatch.undo()
    assert find_latest(run) == good and (run / "checkpoints" / "latest").resolve() == good.resolve()
    assert load_train_state(good)["step"] == 2
    config = load_model(run / "checkpoints" / "latest").config  # the sampler still reads it
    assert config.num_classes == 10
    # a SIGKILL would also leave the staging directory behind: fake one, resume must ignore and clean it
    stale = run / "checkpoints" / ".step_0000004.staging-dead"
    stale.mkdir()
    (stale / ".train_state.pt.tmp").write_bytes(b"PK\x03\x04 truncated")
    result = train(tiny_config(run, "steps=4", "ckpt_every=2"), resume=True)
    assert result.step == 4 and not stale.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000002", "step_0000004"]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 5: .*step_0000004 \(step 4\)"):
        train(tiny_config(run, "steps=8", "ckpt_every=2", "debug_nan_at_step=5", "keep_last=5"))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["latest", "step_0000002", "step_0000004"]  # nothing saved after the NaN
    assert load_train_state(find_latest(run))["step"] == 4
    assert read_log(run, "nonfinite")[0]["step"] == 5
    # the CLI reports it as an error naming the step; the run can then be resumed past it
    code = main(["pretrain", "--preset", "cpu-tiny", "--out", str(tmp_path / "cli"), "--no-progress", "--set", TINY_NET,
                 "batch_size=8", "steps=3", "debug_nan_at_step=2", "tensorboard=false", "device=cpu"])
    assert code == 2 and "non-finite loss (nan) at step 2" in capsys.readouterr().err
    resumed = train(tiny_config(run, "steps=6", "ckpt_every=2", "keep_last=5"), resume=True)
    assert resumed.step == 6
