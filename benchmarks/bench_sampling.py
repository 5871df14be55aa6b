"""Sampling cost of DoG vs CFG vs unguided, and memory of a separate guide vs a LoRA guide.

Reports ratios measured in this run (no assertions). Each memory case runs in its own
subprocess so peak RSS (CPU) or peak allocated memory (CUDA) belongs to that case alone.

    python benchmarks/bench_sampling.py [--model B/2] [--steps 10] [--batch 4] [--device auto]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.models import DiT, dit_config
from domain_guidance.core.models.adapters import add_lora
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.distributed import pick_device


def build(kind: str, name: str, device: torch.device):
    """(guided denoiser, shape) for kind in unguided|cfg|dog-separate|dog-lora."""
    pre_cfg = dit_config(name, input_size=32, num_classes=1000)
    ft_cfg = pre_cfg.replace(num_classes=10)
    if kind == "dog-lora":
        net = add_lora(DiT(pre_cfg), ft_cfg, rank=32).to(device)
        ft, guide = Denoiser(net, ft_cfg), Denoiser(net, pre_cfg, adapter=False)
    else:
        ft = Denoiser(DiT(ft_cfg).to(device), ft_cfg)
        guide = Denoiser(DiT(pre_cfg).to(device), pre_cfg) if kind == "dog-separate" else None
    method = {"unguided": "unguided", "cfg": "cfg"}.get(kind, "dog")
    return build_guided_denoiser(method, ft, guide, scale=1.5), (4, 32, 32)


def time_per_image(kind: str, args, device) -> float:
    g, shape = build(kind, args.model, device)
    kw = dict(shape=shape, device=device, sampler="ddpm", steps=args.steps)
    labels = torch.zeros(args.batch, dtype=torch.long)
    sample_from_seeds(g, list(range(args.batch)), labels, **{**kw, "steps": 2})  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    sample_from_seeds(g, list(range(args.batch)), labels, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / args.batch


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(kind: str, args) -> None:
    device = pick_device(args.device)
    try:  # Linux: reset the peak-RSS counter so imports do not count
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = _proc_status_kib("VmRSS")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g, shape = build(kind, args.model, device)
    sample_from_seeds(g, list(range(args.batch)), torch.zeros(args.batch, dtype=torch.long), shape, device=device,
                      steps=2)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        try:
            high = _proc_status_kib("VmHWM")
        except (OSError, RuntimeError):
            high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = (high - base) / 1024  # KiB -> MiB
    print(json.dumps({"peak_mib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="B/2")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (best is reported)")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        return peak_memory_child(args.memory_child, args)
    device = pick_device(args.device)
    torch.manual_seed(0)
    print(f"model DiT-{args.model}, 32x32x4 latents, DDPM {args.steps} steps, batch {args.batch}, {device}")
    kinds = ("unguided", "cfg", "dog-separate", "dog-lora")
    # interleaved rounds, best of each: robust to other load on a shared machine
    rounds = [{k: time_per_image(k, args, device) for k in kinds} for _ in range(args.rounds)]
    times = {k: min(r[k] for r in rounds) for k in kinds}
    print(f"{'method':<14}{'s/image':>10}{'vs CFG':>9}")
    for k, v in times.items():
        print(f"{k:<14}{v:>10.3f}{v / times['cfg']:>9.2f}")
    peaks = {}
    for kind in ("dog-separate", "dog-lora"):
        res = subprocess.run([sys.executable, __file__, "--memory-child", kind, "--model", args.model,
                              "--batch", str(args.batch), "--device", args.device],
                             capture_output=True, text=True, check=True)
        peaks[kind] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"]
    what = "peak CUDA allocated" if device.type == "cuda" else "peak RSS above the post-import RSS"
    print(f"memory ({what}): separate guide {peaks['dog-separate']:.0f} MiB, LoRA guide "
          f"{peaks['dog-lora']:.0f} MiB, ratio LoRA/separate {peaks['dog-lora'] / peaks['dog-separate']:.2f}")


if __name__ == "__main__":
    main()
