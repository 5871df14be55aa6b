"""Process-count independent training: per-sample seeds, contiguous batch slices, DDP helpers.

Global sample ``k`` of optimizer step ``s`` (0-based) is fully decided by ``(run seed, s, k)``:

- its dataset index: global position ``g = s * B + k`` walks epoch permutations
  (epoch ``g // N``, slot ``g % N``; permutation seeded by ``(seed, epoch)``), so every image is seen
  once per epoch and the data position is just ``s * B``;
- its data seed (flip coin, VAE posterior noise) and its diffusion seed (timestep, label-drop coin,
  noise) from ``derive_seed``.

Rank ``r`` of ``W`` takes the contiguous slice ``[r * B/W, (r+1) * B/W)`` of the global batch and
DDP averages gradients, so ``W`` processes with ``B/W`` samples each compute the same update as one
process with ``B`` (to float round-off in the gradient all-reduce).

Launch (any number of processes, CPU: gloo, GPU: nccl)::

    torchrun --standalone --nproc_per_node=2 -m domain_guidance.cli pretrain --preset cpu-tiny
    torchrun --standalone --nproc_per_node=8 $(which dog) finetune --preset dit-xl2-imagenet-published ...
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ...io.distributed import DistInfo, barrier, init_distributed, pick_device, shutdown

__all__ = ["DistInfo", "barrier", "init_distributed", "pick_device", "shutdown", "derive_seed", "StepKeys",
           "local_slice", "wrap_ddp", "all_reduce_mean", "params_in_sync", "unwrap", "STREAM_DATA",
           "STREAM_DIFFUSION", "STREAM_GLOBAL_RNG"]

_MASK64 = (1 << 64) - 1
STREAM_DATA, STREAM_DIFFUSION, STREAM_GLOBAL_RNG, STREAM_EPOCH = 1, 2, 3, 4


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(run_seed: int, stream: int, step: int, index: int) -> int:
    """A 63-bit seed that depends only on ``(run_seed, stream, step, index)`` (splitmix64 chain)."""
    h = _splitmix64(int(run_seed) & _MASK64)
    for part in (stream, step, index):
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h >> 1


def local_slice(global_batch: int, info: DistInfo) -> slice:
    """This rank's contiguous slice of the global batch; the batch must split evenly."""
    if global_batch % info.world_size:
        raise ValueError(f"batch_size {global_batch} (global) is not divisible by the {info.world_size} processes")
    per = global_batch // info.world_size
    return slice(info.rank * per, (info.rank + 1) * per)


class StepKeys:
    """Dataset keys and diffusion seeds of every step, a pure function of ``(seed, step, k)``."""

    def __init__(self, num_samples: int, global_batch: int, seed: int, shuffle: bool = True):
        if num_samples <= 0:
            raise ValueError("the training set is empty")
        self.num_samples, self.global_batch, self.seed, self.shuffle = num_samples, global_batch, seed, shuffle

    @lru_cache(maxsize=4)
    def permutation(self, epoch: int) -> np.ndarray:
        """Order of the dataset in ``epoch`` (N,)."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, STREAM_EPOCH, epoch]).permutation(self.num_samples)

    def indices(self, step: int, ks: range) -> list[int]:
        """Dataset indices of global samples ``ks`` of 0-based step ``step``."""
        out = []
        for k in ks:
            epoch, slot = divmod(step * self.global_batch + k, self.num_samples)
            out.append(int(self.permutation(epoch)[slot]))
        return out

    def data_keys(self, step: int, ks: range) -> list[tuple[int, int]]:
        """``(index, data seed)`` keys for the dataset (flip coin, then posterior noise)."""
        return [(i, derive_seed(self.seed, STREAM_DATA, step, k)) for i, k in zip(self.indices(step, ks), ks)]

    def diffusion_seeds(self, step: int, ks: range) -> list[int]:
        """Per-sample seeds of the timestep, the label-drop coin and the noise, in that order."""
        return [derive_seed(self.seed, STREAM_DIFFUSION, step, k) for k in ks]


class StepBatchSampler(torch.utils.data.Sampler):
    """Batch sampler for a ``DataLoader``: one list of this rank's keys per step from ``start`` to ``stop``."""

    def __init__(self, keys: StepKeys, ks: range, start: int, stop: int):
        self.keys, self.ks, self.start, self.stop = keys, ks, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.keys.data_keys(step, self.ks)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP around ``model`` when more than one process runs; gradients are averaged over ranks."""
    if not info.enabled:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over ranks (a copy; ``t`` itself is unchanged)."""
    out = t.detach().clone()
    if info.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= info.world_size
    return out


@torch.no_grad()
def params_in_sync(params: list[torch.Tensor], info: DistInfo) -> tuple[bool, list[list[float]]]:
    """Whether every rank holds the same trained weights; returns (equal, per-rank [sum, abs-sum])."""
    stats = torch.zeros(2, dtype=torch.float64, device=info.device)
    for p in params:
        stats[0] += p.detach().double().sum()
        stats[1] += p.detach().double().abs().sum()
    if not info.enabled:
        return True, [stats.tolist()]
    gathered = [torch.zeros_like(stats) for _ in range(info.world_size)]
    dist.all_gather(gathered, stats)
    rows = [g.tolist() for g in gathered]
    return all(r == rows[0] for r in rows), rows
