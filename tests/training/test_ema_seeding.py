"""EMA warm-up arithmetic and the process-count independence of per-sample keys and seeds."""
from __future__ import annotations

import torch

from domain_guidance.io.distributed import DistInfo
from domain_guidance.pipelines.training.config import EmaConfig
from domain_guidance.pipelines.training.distributed import StepKeys, derive_seed, local_slice
from domain_guidance.pipelines.training.ema import EMA, ema_decay


def test_ema_warmup_schedules():
    assert ema_decay(0, EmaConfig(decay=0.9999, warmup="none")) == 0.9999
    lin = EmaConfig(decay=0.9999, warmup="linear")
    assert ema_decay(0, lin) == 0.1 and ema_decay(90, lin) == 91 / 100 and ema_decay(10**7, lin) == 0.9999
    pw = EmaConfig(decay=0.999, warmup="power", power=2 / 3, inv_gamma=1.0)
    assert ema_decay(0, pw) == 0.0 and abs(ema_decay(7, pw) - (1 - 8 ** (-2 / 3))) < 1e-12
    assert ema_decay(10**9, pw) == 0.999


def test_ema_update_and_swap_restores():
    p = {"w": torch.tensor([1.0, 2.0])}
    ema = EMA(p, EmaConfig(decay=0.5))
    p["w"].copy_(torch.tensor([3.0, 6.0]))
    assert ema.update(p, 0) == 0.5
    assert torch.equal(ema.shadow["w"], torch.tensor([2.0, 4.0]))
    with ema.applied(p):
        assert torch.equal(p["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal(p["w"], torch.tensor([3.0, 6.0])) and torch.equal(ema.shadow["w"], torch.tensor([2.0, 4.0]))


def test_keys_do_not_depend_on_the_number_of_processes():
    keys = StepKeys(num_samples=10, global_batch=8, seed=3)
    for step in range(3):
        whole = keys.data_keys(step, range(8)), keys.diffusion_seeds(step, range(8))
        for world in (2, 4):
            parts_data, parts_diff = [], []
            for rank in range(world):
                sl = local_slice(8, DistInfo(rank=rank, world_size=world))
                parts_data += keys.data_keys(step, range(sl.start, sl.stop))
                parts_diff += keys.diffusion_seeds(step, range(sl.start, sl.stop))
            assert (parts_data, parts_diff) == whole
    # every image once per epoch: 10 samples, batch 8 -> steps 0..4 cover epochs 0..3 exactly
    seen = [i for s in range(5) for i, _ in keys.data_keys(s, range(8))]
    assert all(sorted(seen[e * 10:(e + 1) * 10]) == list(range(10)) for e in range(4))
    assert derive_seed(0, 1, 2, 3) == derive_seed(0, 1, 2, 3) != derive_seed(0, 1, 2, 4)
    assert 0 <= derive_seed(2**40, 9, 10**9, 10**6) < 2**63
