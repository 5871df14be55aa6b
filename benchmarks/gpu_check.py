"""The prepared GPU check (run by gpu_check.sh): DiT-XL/2 with random weights, ratios measured in one run.

1. sampling: images/s of CFG, DoG (separate pre-trained guide) and LoRA-DoG (one call of 2N) at
   fp32 / tf32 / bf16, model FLOP utilisation (FLOPs counted by FlopCounterMode x evaluations
   counted by the denoisers) against the measured matmul peak and the data-sheet peak;
2. compile: torch.compile time and forward speed-up (``--no-compile`` skips it);
3. fine-tuning: optimizer steps/s of the ADM loss with the latent cache (latents in memory) vs
   encoding every step with a VAE, each with and without gradient checkpointing, and peak memory;
4. memory: peak allocated memory of DoG sampling with a full fine-tune (two networks) vs LoRA-DoG
   (one network, adapter off for the guide).

``--tiny`` runs the same code on a CPU in seconds (T/2, 8x8 latents, a small VAE): what the tests do.
Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import (build_nets, evaluations, forward_flops, guided, matmul_peak, nominal_peak,  # noqa: E402
                    round_robin, sampler_run)

from domain_guidance.core.precision import CompiledModule, check_precision, precision_context  # noqa: E402


@dataclasses.dataclass
class Plan:
    model: str
    input_size: int  # latent side
    batch: int
    steps: int
    rounds: int
    train_batch: int
    train_steps: int
    vae_blocks: tuple[int, ...]


FULL = Plan("XL/2", 32, 32, 10, 2, 32, 6, (128, 256, 512, 512))  # 256 px images, SD-sized VAE
TINY = Plan("T/2", 8, 4, 2, 1, 4, 2, (8, 16, 16, 16))


def memory_now(device: torch.device) -> float:
    """Peak allocated MB since the last reset (CUDA), or the process's peak RSS in MB (CPU: never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sampling(plan: Plan, device: torch.device, precisions: list[str]) -> dict:
    nets = build_nets(plan.model, plan.input_size, device)
    x = torch.randn(plan.batch, *nets.shape, device=device)
    t = torch.full((plan.batch,), 500, device=device)
    y = torch.arange(plan.batch, device=device) % 10
    flops = forward_flops(nets.ft, x, t, y) / plan.batch  # per sample per forward
    cases, dens = {}, {}
    for p in precisions:
        for m in ("cfg", "dog", "dog-lora"):
            dens[f"{p}/{m}"] = guided(nets, m, p)
            cases[f"{p}/{m}"] = sampler_run(dens[f"{p}/{m}"], nets, plan.batch, plan.steps, device)
    peaks = {p: matmul_peak(p, device) for p in precisions}
    best = round_robin(cases, plan.rounds, device)
    rows = {}
    for name, sec in best.items():
        p = name.split("/")[0]
        evals = evaluations(dens[name]) / ((plan.rounds + 1) * plan.batch)
        achieved = flops * evals * plan.batch / sec / 1e9
        nominal = nominal_peak(device, p)
        rows[name] = {"images_per_s": plan.batch / sec, "evaluations_per_image": evals, "achieved_gflops": achieved,
                      "mfu_measured_peak": achieved / peaks[p],
                      "mfu_nominal_peak": achieved / (nominal * 1e3) if nominal else None}
    del nets, dens, cases
    return {"gflop_per_forward_sample": flops / 1e9, "matmul_peak_gflops": peaks, "rows": rows}


def compile_check(plan: Plan, device: torch.device) -> dict:
    nets = build_nets(plan.model, plan.input_size, device, with_lora=False)
    x = torch.randn(plan.batch, *nets.shape, device=device)
    t = torch.full((plan.batch,), 500, device=device)
    y = torch.arange(plan.batch, device=device) % 10
    compiled = CompiledModule(nets.ft)
    precision = "tf32" if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"
    with torch.no_grad(), precision_context(precision, device):
        compiled(x, t, y)
    if compiled.note:
        return {"note": compiled.note}

    def fwd(net):
        def run():
            with torch.no_grad(), precision_context(precision, device):
                return net(x, t, y)
        return run

    best = round_robin({"eager": fwd(nets.ft), "compiled": fwd(compiled)}, max(plan.rounds, 3), device)
    return {"precision": precision, "compile_seconds": compiled.compile_seconds, "eager_ms": best["eager"] * 1e3,
            "compiled_ms": best["compiled"] * 1e3, "speedup": best["eager"] / best["compiled"]}


def finetuning(plan: Plan, device: torch.device) -> dict:
    """Steps/s of full fine-tuning (AdamW, ADM loss) from latents in memory vs encoding every step."""
    from diffusers import AutoencoderKL

    from domain_guidance.core.diffusion.gaussian import GaussianDiffusion, linear_betas
    from domain_guidance.core.models import DiT, dit_config
    from domain_guidance.io.vae import VAE

    torch.manual_seed(0)
    px = plan.input_size * 8
    blocks = plan.vae_blocks
    vae = VAE(AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=blocks,
                            layers_per_block=2 if blocks[0] >= 128 else 1,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            latent_channels=4, norm_num_groups=min(32, blocks[0]), sample_size=px), device=device)
    cfg = dit_config(plan.model, input_size=plan.input_size, num_classes=10)
    diffusion = GaussianDiffusion(linear_betas(), learn_sigma=cfg.learn_sigma)
    images = torch.rand(plan.train_batch, 3, px, px, device=device) * 2 - 1  # (B, 3, px, px) in [-1, 1]
    labels = torch.arange(plan.train_batch, device=device) % 10
    cached = vae.encode_sample(images)  # (B, 4, h, w): what the latent cache holds
    out = {}
    for cache in (True, False):
        for ckpt in (False, True):
            reset_memory(device)
            net = DiT(cfg).to(device).train()
            net.gradient_checkpointing = ckpt
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0)

            def step() -> None:
                x0 = cached if cache else vae.encode_sample(images)
                t = torch.randint(0, diffusion.num_timesteps, (plan.train_batch,), device=device)
                noise = torch.randn_like(x0)
                x_t = diffusion.q_sample(x0, t, noise)  # (B, 4, h, w)
                with precision_context("tf32" if device.type == "cuda" else "fp32", device):
                    model_out = net(x_t, t, labels)
                    loss = diffusion.training_losses(model_out.float(), x0, x_t, t, noise)["loss"].mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

            step()  # warm-up (optimizer state allocated)
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            t0 = time.perf_counter()
            for _ in range(plan.train_steps):
                step()
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            sec = (time.perf_counter() - t0) / plan.train_steps
            out[f"{'latent cache' if cache else 'encode every step'}, checkpointing {'on' if ckpt else 'off'}"] = {
                "steps_per_s": 1 / sec, "images_per_s": plan.train_batch / sec, "peak_mb": memory_now(device)}
            del net, opt
    return out


def memory(plan: Plan, device: torch.device) -> dict:
    """Peak memory of DoG sampling: full fine-tune (two networks) vs LoRA (one network + adapter)."""
    out = {}
    for kind in ("dog", "dog-lora"):
        reset_memory(device)
        nets = build_nets(plan.model, plan.input_size, device, with_lora=kind == "dog-lora")
        if kind == "dog-lora":
            nets.ft, nets.pre = None, None  # only the adapted network stays
        else:
            nets.lora = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        den = guided(nets, kind, "bf16" if device.type == "cuda" else "fp32")
        sampler_run(den, nets, plan.batch, plan.steps, device)()
        params = sum(p.numel() for n in (nets.ft, nets.pre, nets.lora) if n is not None for p in n.parameters())
        out[kind] = {"peak_mb": memory_now(device), "weights_mb": params * 4 / 2 ** 20}
        del nets, den
    return out


def markdown(r: dict) -> str:
    lines = [f"# GPU check: DiT-{r['plan']['model']} (random weights) on {r['device_name']}", "",
             f"torch {r['torch']}, {r['when']}; ratios measured in this one run", "",
             "## Sampling (DDIM, batch {batch}, {steps} steps)".format(**r["plan"]), "",
             "| precision / method | img/s | NFE/img | GFLOP/s | of measured peak | of data-sheet peak |",
             "|---|---|---|---|---|---|"]
    s = r["sampling"]
    for name, row in s["rows"].items():
        nominal = f"{row['mfu_nominal_peak']:.1%}" if row["mfu_nominal_peak"] is not None else "-"
        lines.append(f"| {name} | {row['images_per_s']:.2f} | {row['evaluations_per_image']:.0f} | "
                     f"{row['achieved_gflops']:.0f} | {row['mfu_measured_peak']:.1%} | {nominal} |")
    lines.append("")
    lines.append("measured matmul peaks (GFLOP/s): " + ", ".join(f"{p} {v:.0f}" for p, v in s["matmul_peak_gflops"].items()))
    for p in s["matmul_peak_gflops"]:
        rows = s["rows"]
        lines.append(f"- {p}: DoG / CFG images/s {rows[f'{p}/dog']['images_per_s'] / rows[f'{p}/cfg']['images_per_s']:.2f}x,"
                     f" LoRA-DoG / DoG {rows[f'{p}/dog-lora']['images_per_s'] / rows[f'{p}/dog']['images_per_s']:.2f}x,"
                     f" vs fp32 {rows[f'{p}/dog']['images_per_s'] / rows['fp32/dog']['images_per_s']:.2f}x (DoG)")
    c = r.get("compile")
    if c:
        lines += ["", "## torch.compile", "", c.get("note") or
                  f"first call {c['compile_seconds']:.1f} s; forward {c['eager_ms']:.1f} ms eager vs "
                  f"{c['compiled_ms']:.1f} ms compiled ({c['speedup']:.2f}x, {c['precision']})"]
    lines += ["", "## Fine-tuning (AdamW, ADM loss, batch {train_batch})".format(**r["plan"]), "",
              "| case | steps/s | img/s | peak MB |", "|---|---|---|---|"]
    for name, row in r["finetuning"].items():
        lines.append(f"| {name} | {row['steps_per_s']:.2f} | {row['images_per_s']:.1f} | {row['peak_mb']:.0f} |")
    m = r["memory"]
    lines += ["", "## DoG sampling memory", "",
              f"full fine-tune + separate guide: peak {m['dog']['peak_mb']:.0f} MB (weights {m['dog']['weights_mb']:.0f} MB); "
              f"LoRA-DoG: peak {m['dog-lora']['peak_mb']:.0f} MB (weights {m['dog-lora']['weights_mb']:.0f} MB); "
              f"ratio {m['dog-lora']['peak_mb'] / m['dog']['peak_mb']:.2f}x"]
    if r["device"] == "cpu":
        lines.append("(CPU: peak memory is the process's peak RSS so far, which never decreases: only the CUDA numbers "
                     "separate the cases)")
    lines.append(f"\ntotal {r['seconds']:.0f} s")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="T/2 on 8x8 latents: the same code in seconds (CPU, tests)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile part")
    ap.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and gpu_check.md")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    plan = TINY if args.tiny else FULL
    if device.type == "cpu" and not args.tiny:
        print("gpu_check: no CUDA device; running the --tiny plan on the CPU (numbers say nothing about a GPU)")
        plan = TINY
    precisions = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    precisions = [p for p in precisions if _usable(p, device)]
    t0 = time.perf_counter()
    result = {"device": device.type, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or "CPU", "torch": torch.__version__, "plan": dataclasses.asdict(plan),
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name, fn in (("sampling", lambda: sampling(plan, device, precisions)),
                     ("compile", None if args.no_compile else lambda: compile_check(plan, device)),
                     ("finetuning", lambda: finetuning(plan, device)), ("memory", lambda: memory(plan, device))):
        if fn is None:
            continue
        s = time.perf_counter()
        result[name] = fn()
        print(f"[{name}: {time.perf_counter() - s:.0f} s]", flush=True)
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (out / "gpu_check.md").write_text(text)
    print(text)


def _usable(precision: str, device: torch.device) -> bool:
    try:
        check_precision(precision, device)
        return True
    except ValueError as e:
        print(f"gpu_check: skipping {precision}: {e}")
        return False


if __name__ == "__main__":
    main()
