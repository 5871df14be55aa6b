"""torch.distributed set-up from torchrun's environment (gloo on CPU, nccl on GPU).

Shared by every pipeline that runs under ``torchrun``; a plain ``python`` run is world size 1.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises ValueError naming the device when the string is not a device or the device is not
    available here (e.g. ``cuda`` on a machine or torch build without CUDA).
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {device!r} is not a device name; expected {DEVICE_CHOICES}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} requested but MPS is not available here; use --device cpu or auto")
        return dev
    raise ValueError(f"device {device!r} is not supported; expected {DEVICE_CHOICES}")


def init_distributed(device: str = "auto", timeout_s: float = 300.0) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); otherwise a single process.

    The timeout makes a dead peer fail the run instead of hanging it forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    base = pick_device(device)
    if world <= 1:
        return DistInfo(device=base)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        torch.cuda.set_device(local)
        base = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if base.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=base)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
