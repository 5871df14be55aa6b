"""Two processes under torchrun (gloo) == one process with the same global batch; ranks stay in sync."""
from __future__ import annotations

import pytest
import torch

from domain_guidance.pipelines.training import load_train_state, train
from domain_guidance.pipelines.training.logging import read_log

from .conftest import TINY_NET, run_cli, tiny_config

SETS = ("steps=4", "ckpt_every=2", "lr=3e-3", "grad_clip=1.0", "data.classes=[0, 1, 2, 3]", "ema.decay=0.9")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    two = tmp_path / "two"
    args = ["pretrain", "--preset", "cpu-tiny", "--out", str(two), "--no-progress", "--set", TINY_NET,
            "batch_size=8", "progress=false", "tensorboard=false", "sample_every=0", "log_every=1", "device=cpu",
            "dist_timeout_s=60", *SETS]
    proc = run_cli(args, nproc=2, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:]
    one = train(tiny_config(tmp_path / "one", *SETS))

    start = read_log(two, "start")[0]
    assert start["world_size"] == 2
    syncs = read_log(two, "sync")
    assert [r["step"] for r in syncs] == [2, 4] and all(r["ranks_equal"] for r in syncs)
    assert all(len(r["checksums"]) == 2 for r in syncs)
    a, b = load_train_state(one.checkpoint), load_train_state(two / "checkpoints" / "latest")
    assert a["step"] == b["step"] == 4 and a["data_position"] == b["data_position"] == 32
    for part in ("model", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
    for i, st in a["optimizer"]["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(st[k], b["optimizer"]["state"][i][k], rtol=1e-4, atol=1e-8)
    l1 = [r["loss"] for r in read_log(one.run_dir, "train")]
    l2 = [r["loss"] for r in read_log(two, "train")]
    torch.testing.assert_close(torch.tensor(l1), torch.tensor(l2), rtol=1e-5, atol=1e-6)
