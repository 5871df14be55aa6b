"""Speed measurements shared by bench_precision.py and gpu_check.py (not a benchmark by itself).

Everything here measures in the running process and returns numbers; callers print ratios
measured in one run (the machine may be shared: cases are interleaved round-robin and the best
of the rounds is kept).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import GuidedDenoiser, build_guided_denoiser
from domain_guidance.core.models import DiT, DiTConfig, dit_config
from domain_guidance.core.models.adapters import add_lora
from domain_guidance.core.precision import precision_context
from domain_guidance.core.sampling import sample_from_seeds

# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets, by precision. Only used to
# put the measured matmul peak in context; MFU is reported against both.
NOMINAL_TFLOPS = {
    "H100 SXM": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nominal_peak(device: torch.device, precision: str) -> float | None:
    """Data-sheet TFLOP/s of this GPU at ``precision`` when its name is in the table, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in NOMINAL_TFLOPS.items():
        if all(part in name for part in key.split()):
            return peaks.get(precision)
    return None


def matmul_peak(precision: str, device: torch.device, n: int | None = None, reps: int = 5) -> float:
    """Measured GFLOP/s of an n x n x n matmul at ``precision`` (best of ``reps``): the practical peak.

    Run the way the network's matmuls run: float32 tensors through ``F.linear`` inside the precision's
    context (autocast for bf16/fp16, TF32 flags for tf32), so a CPU without native bf16 shows its slow path.
    """
    n = n or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g)
    b = torch.randn(n, n, device=device, generator=g)
    best = float("inf")
    with torch.no_grad(), precision_context(precision, device):
        torch.nn.functional.linear(a, b)  # warm-up
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            torch.nn.functional.linear(a, b)
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def forward_flops(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> int:
    """Counted FLOPs (matmuls and convolutions, 2 per multiply-add) of one forward of the batch."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x, t, y)
    return int(counter.get_total_flops())


def round_robin(cases: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> dict[str, float]:
    """Best wall seconds of each case over ``rounds`` interleaved rounds (after one warm-up call each)."""
    for fn in cases.values():
        fn()
    best = {k: float("inf") for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@dataclasses.dataclass
class Nets:
    """A fine-tuned DiT (10 classes + null), a separate pre-trained guide (1000 + null) and a LoRA pair."""

    ft: DiT
    pre: DiT
    lora: torch.nn.Module
    ft_cfg: DiTConfig
    pre_cfg: DiTConfig

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.ft_cfg.in_channels, *self.ft_cfg.grid_hw_pixels)


def build_nets(model: str, input_size: int, device: torch.device, lora_rank: int = 32, with_lora: bool = True) -> Nets:
    """Random-weight networks of registry size ``model`` on ``input_size`` latents (4 channels)."""
    pre_cfg = dit_config(model, input_size=input_size, num_classes=1000)
    ft_cfg = pre_cfg.replace(num_classes=10)
    torch.manual_seed(0)
    ft, pre = DiT(ft_cfg).to(device).eval(), DiT(pre_cfg).to(device).eval()
    lora = add_lora(DiT(pre_cfg), ft_cfg, rank=lora_rank).to(device).eval() if with_lora else None
    if lora is not None:
        with torch.no_grad():  # a non-zero adapter, as after fine-tuning
            for name, p in lora.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
    return Nets(ft, pre, lora, ft_cfg, pre_cfg)


def guided(nets: Nets, method: str, precision: str, fuse: bool = True, scale: float = 1.5) -> GuidedDenoiser:
    """unguided / cfg / dog (separate guide) / dog-lora (one network, adapter off for the guide)."""
    if method == "dog-lora":
        ft = Denoiser(nets.lora, nets.ft_cfg, precision=precision, fuse=fuse)
        return build_guided_denoiser("dog", ft, Denoiser(nets.lora, nets.pre_cfg, adapter=False, precision=precision,
                                                         fuse=fuse), scale)
    ft = Denoiser(nets.ft, nets.ft_cfg, precision=precision)
    guide = Denoiser(nets.pre, nets.pre_cfg, precision=precision) if method == "dog" else None
    return build_guided_denoiser(method, ft, guide, scale)


def sampler_run(den: GuidedDenoiser, nets: Nets, batch: int, steps: int, device: torch.device) -> Callable[[], object]:
    """A closure that samples ``batch`` images with ``steps`` DDIM steps (no grad)."""
    labels = torch.arange(batch) % 10

    def run() -> object:
        with torch.no_grad():
            return sample_from_seeds(den, list(range(batch)), labels, nets.shape, device=device, sampler="ddim",
                                     steps=steps)
    return run


def evaluations(den: GuidedDenoiser) -> int:
    """Per-sample network evaluations made so far through ``den``'s branches."""
    branches = {id(d): d for d in (den.cond, den.uncond) if d is not None}
    return sum(d.evaluations for d in branches.values())
