"""Training throughput: latent cache vs encoding every step; full fine-tuning vs LoRA (speed and memory).

Reports ratios measured in this run (nothing is asserted). Every case runs in its own subprocess so
its peak memory is its own: peak RSS from ``resource.getrusage`` on the CPU (the whole process,
Python and torch included, so differences between cases are what matter), and
``torch.cuda.max_memory_allocated`` on a GPU. Throughput is the last logged window of the
training loop (steady state: set-up, the first step and cache building are excluded; the cache
build time is reported on its own).

    python benchmarks/bench_training.py [--steps 20] [--model S/2] [--device auto] [--threads 2]

Latent cases: digits at 64 px (RGB), a small AutoencoderKL built from a config (4 levels, 8x
down, like SD's VAE but narrower), a T/2 DiT on the 8x8x4 latents. Full vs LoRA: a DiT of size
``--model`` on 16x16 pixel digits, fine-tuned from a random "pre-trained" checkpoint (LoRA rank 16).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_vae(path: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 64, 128, 128), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  latent_channels=4, norm_num_groups=32, sample_size=64).save_pretrained(path)


def make_base(path: Path, model: str) -> None:
    from domain_guidance.core.models import DiT, dit_config
    from domain_guidance.io.checkpoints import save_checkpoint

    cfg = dit_config(model, input_size=16, in_channels=1, num_classes=10, latent=False, vae=None)
    torch.manual_seed(0)
    net = DiT(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.02)
    save_checkpoint(path, net, cfg)


def case_sets(case: str, work: Path, steps: int, device: str) -> list[str]:
    common = [f"out={work / case}", f"steps={steps}", f"log_every={max(1, steps // 2)}", f"ckpt_every={10 * steps}",
              "sample_every=0", "progress=false", "tensorboard=false", f"device={device}", "batch_size=16"]
    if case.startswith("latent"):
        return common + ["init=scratch", "model=T/2", "data.dataset=digits", "data.resolution=64", "data.channels=3",
                         f"vae={work / 'vae'}", f"data.latent_cache={'true' if case == 'latent-cache' else 'false'}",
                         f"data.cache_path={work / 'latents.safetensors'}"]
    mode = "lora" if case == "lora" else "full"
    return common + [f"base={work / 'base'}", f"mode={mode}", "lora.rank=16", "data.dataset=digits",
                     "data.resolution=16", "data.classes=[0, 1, 2, 3]", "grid.methods=[unguided]"]


def run_case(case: str, work: Path, steps: int, device: str) -> dict:
    """Child process: train, then report speed and memory as one JSON line."""
    from domain_guidance.pipelines.training import resolve_config, train
    from domain_guidance.pipelines.training.logging import read_log

    cfg = resolve_config(None, sets=case_sets(case, work, steps, device))
    t0 = time.perf_counter()
    if case == "latent-cache":  # build the cache first so its one-off cost is reported separately
        from domain_guidance.io.data import build_latent_cache, load_dataset
        from domain_guidance.io.vae import VAE

        vae = VAE.from_pretrained(work / "vae", device=device if device != "auto" else "cpu")
        build_latent_cache(load_dataset("digits", resolution=64, channels=3), vae, work / "latents.safetensors")
    cache_s = time.perf_counter() - t0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(cfg)
    windows = read_log(result.run_dir, "train")
    start = read_log(result.run_dir, "start")[0]
    return {"case": case, "it_per_s": windows[-1]["it_per_s"], "img_per_s": windows[-1]["img_per_s"],
            "cache_build_s": cache_s if case == "latent-cache" else None,
            "params": start["params"], "trainable": start["trainable"],
            # counted fp32 tensors: weights (+ a frozen guide copy for a full fine-tune) + grad, Adam m, v, EMA
            "state_mb": 4 * (start["params"] * (2 if case == "full" else 1) + 4 * start["trainable"]) / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
            "threads": torch.get_num_threads()}


def spawn(case: str, work: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--case", case, "--work", str(work), "--steps", str(args.steps),
           "--device", args.device]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per case (default 20)")
    ap.add_argument("--model", default="S/2", help="DiT size of the full-vs-LoRA cases (default S/2)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per case (default: torch's default)")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.work), args.steps, args.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_vae(work / "vae")
        make_base(work / "base", args.model)
        rows = {c: spawn(c, work, args) for c in ("latent-cache", "latent-encode", "full", "lora")}
    print(f"{'case':14s} {'it/s':>8s} {'img/s':>8s} {'trainable':>11s} {'state MB':>9s} {'peak RSS MB':>12s} "
          f"{'CUDA peak MB':>13s}")
    for r in rows.values():
        cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
        print(f"{r['case']:14s} {r['it_per_s']:8.2f} {r['img_per_s']:8.1f} {r['trainable']:11,d} {r['state_mb']:9.0f} "
              f"{r['peak_rss_mb']:12.0f} {cuda:>13s}")
    lc, le, full, lora = (rows[c] for c in ("latent-cache", "latent-encode", "full", "lora"))
    print(f"\nlatent cache vs encoding every step: {lc['it_per_s'] / le['it_per_s']:.2f}x throughput "
          f"(one-off cache build {lc['cache_build_s']:.1f} s for 1797 images x 2 flips)")
    print(f"LoRA vs full fine-tuning ({args.model}, {full['params']:,d} params): "
          f"{lora['it_per_s'] / full['it_per_s']:.2f}x throughput, trainable {lora['trainable'] / full['trainable']:.3%}, "
          f"peak RSS {lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}x "
          f"({full['peak_rss_mb'] - lora['peak_rss_mb']:.0f} MB less), "
          f"counted state {lora['state_mb'] / full['state_mb']:.2f}x")
    print("state MB = weights (full: + the frozen pre-trained copy used as DoG guide) + grads + Adam m, v + EMA, fp32; "
          "peak RSS is the whole process (Python, torch, data, activations)")
    if full["cuda_peak_mb"] is not None:
        print(f"CUDA peak allocated: LoRA / full = {lora['cuda_peak_mb'] / full['cuda_peak_mb']:.2f}x")
    print(f"threads per case: {full['threads']}; device: {args.device}")


if __name__ == "__main__":
    main()
