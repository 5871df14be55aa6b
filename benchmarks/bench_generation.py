"""Generation throughput of `dog sample` with 1 and 2 processes (torchrun, gloo on CPU).

Builds a small pixel DiT checkpoint pair in a temp dir, runs the same seeds both ways, checks the
two sample sets are identical, and reports images/s and the 2-process/1-process ratio.

    python benchmarks/bench_generation.py [--model M/2] [--size 16] [--samples 64] [--steps 25]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from domain_guidance.core.models import DiT, dit_config
from domain_guidance.io.checkpoints import retarget, save_model


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="M/2")
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--steps", default="25")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        pre = DiT(dit_config(args.model, input_size=args.size, in_channels=1, latent=False, num_classes=10))
        save_model(root / "pre", pre, pre.config)
        ft, ft_cfg = retarget(pre, pre.config, num_classes=4)
        save_model(root / "ft", ft, ft_cfg)
        common = ["sample", "--model", str(root / "ft"), "--guide", str(root / "pre"), "--method", "dog",
                  "--seeds", f"0-{args.samples - 1}", "--steps", args.steps, "--batch-size", str(args.batch_size),
                  "--shard-size", str(max(1, args.samples // 8)), "--no-progress", "--device", "cpu"]
        one = run([sys.executable, "-m", "domain_guidance.cli", *common, "--out", str(root / "one")], cores)
        two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "domain_guidance.cli", *common, "--out", str(root / "two")], max(1, cores // 2))
        same = all(np.array_equal(np.load(root / d / "samples.npz")["arr_0"], np.load(root / "one" / "samples.npz")["arr_0"])
                   for d in ("two",))
    print(f"DiT-{args.model} {args.size}x{args.size}x1, DoG, DDPM {args.steps} steps, {args.samples} samples, "
          f"{cores} cores (wall time includes start-up)")
    print(f"1 process : {args.samples / one:7.2f} img/s ({one:.1f} s, {cores} threads)")
    print(f"2 processes: {args.samples / two:7.2f} img/s ({two:.1f} s, {max(1, cores // 2)} threads each)")
    print(f"ratio 2/1: {one / two:.2f}x; identical sample sets: {same}")


if __name__ == "__main__":
    main()
