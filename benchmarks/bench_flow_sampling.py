"""Flow-matching (SiT) sampling cost: ODE vs SDE samplers at EQUAL network evaluations, and DoG vs CFG.

At ``--nfe N`` guided-denoiser evaluations per image: ode-euler takes N steps, ode-heun N/2 steps
(two evaluations per step) and sde-euler N steps (N - 1 Euler-Maruyama steps + SiT's last step).
Each evaluation is one network call unguided; guided, CFG batches its two branches into one call
on twice the batch and DoG makes one call per network. Evaluations and network calls (per run: the
whole batch goes through each call) are counted, not assumed. A SiT of registry size ``--model``
with random weights; ratios are measured in this run, printed, never asserted.

    python benchmarks/bench_flow_sampling.py [--model S/2] [--input-size 16] [--nfe 10] [--batch 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import GuidedDenoiser, build_guided_denoiser
from domain_guidance.core.models import DiT, dit_config
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.distributed import pick_device

SAMPLERS = ("ode-euler", "ode-heun", "sde-euler")
METHODS = ("unguided", "cfg", "dog")


def steps_for(sampler: str, nfe: int) -> int:
    """Sampler steps that make ``nfe`` denoiser evaluations per image."""
    if sampler == "ode-heun":
        if nfe % 2:
            raise ValueError(f"--nfe {nfe}: ode-heun evaluates twice per step; pass an even number")
        return nfe // 2
    return nfe


class Counted:
    """A guided denoiser that counts its evaluations (what the sampler sees); ``calls`` counts network calls."""

    def __init__(self, inner: GuidedDenoiser, calls: list[int]) -> None:
        self.inner, self.calls, self.evaluations = inner, calls, 0
        self.prediction, self.learn_sigma = inner.prediction, inner.learn_sigma

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        return self.inner(x, t, labels)


def build(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Counted], list[int]]:
    """Unguided / CFG / DoG denoisers over one fine-tuned SiT (10 classes + null) and a separate pre-trained
    SiT guide (1000 classes + null), and the shared network-call counter."""
    pre_cfg = dit_config(f"SiT-{args.model}", input_size=args.input_size, num_classes=1000)
    ft_cfg = pre_cfg.replace(num_classes=10)
    torch.manual_seed(0)
    nets = [DiT(ft_cfg).to(device).eval(), DiT(pre_cfg).to(device).eval()]
    calls = [0]
    for net in nets:
        net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    ft, guide = Denoiser(nets[0], ft_cfg), Denoiser(nets[1], pre_cfg)
    return {m: Counted(build_guided_denoiser(m, ft, guide if m == "dog" else None, scale=1.5), calls)
            for m in METHODS}, calls


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def run_case(den: Counted, calls: list[int], sampler: str, args: argparse.Namespace, device: torch.device,
             steps: int) -> tuple[float, int, int]:
    """(seconds per image, evaluations, network calls) of one sampling run over the batch."""
    seeds, labels = list(range(args.batch)), torch.arange(args.batch) % 10
    den.evaluations, calls[0] = 0, 0
    sync(device)
    t0 = time.perf_counter()
    sample_from_seeds(den, seeds, labels, (4, args.input_size, args.input_size), device=device, sampler=sampler,
                      steps=steps)
    sync(device)
    return (time.perf_counter() - t0) / args.batch, den.evaluations, calls[0]


def measure(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Every (sampler, method) case, round-robin for ``--repeats`` rounds (a busy machine slows all cases
    alike), keeping each case's best time."""
    dens, calls = build(args, device)
    cases = [(s, m) for s in SAMPLERS for m in METHODS]
    for s, m in cases:  # warm-up
        run_case(dens[m], calls, s, args, device, 2)
    rows = {c: {"sampler": c[0], "method": c[1], "steps": steps_for(c[0], args.nfe), "s_per_image": float("inf")}
            for c in cases}
    for _ in range(args.repeats):
        for c in cases:
            sec, evaluations, net_calls = run_case(dens[c[1]], calls, c[0], args, device, rows[c]["steps"])
            rows[c].update(evaluations=evaluations, network_calls=net_calls,
                           s_per_image=min(rows[c]["s_per_image"], sec))
    return list(rows.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="S/2", help="SiT registry size (S/2, B/2, ...)")
    p.add_argument("--input-size", type=int, default=16,
                   help="latent side (32 = 256 px images; 16 keeps a CPU run short)")
    p.add_argument("--nfe", type=int, default=10, help="denoiser evaluations per image, the same for every sampler")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="rounds over all cases (each case's best is kept)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows = measure(args, device)
    t = {(r["method"], r["sampler"]): r["s_per_image"] for r in rows}
    print(f"SiT-{args.model}, {args.input_size}x{args.input_size}x4 latents, batch {args.batch}, {args.nfe} "
          f"evaluations per image, device {device}, {torch.get_num_threads()} threads, best of {args.repeats} rounds")
    print(f"{'sampler':10} {'method':9} {'steps':>5} {'evals/img':>9} {'net calls':>9} {'s/img':>8} "
          f"{'vs ode-euler':>12}")
    for r in rows:
        rel = r["s_per_image"] / t[(r["method"], "ode-euler")]
        print(f"{r['sampler']:10} {r['method']:9} {r['steps']:>5} {r['evaluations']:>9} {r['network_calls']:>9} "
              f"{r['s_per_image']:>8.3f} {rel:>12.2f}")
    for s in SAMPLERS:
        dog, cfg, plain = t[("dog", s)], t[("cfg", s)], t[("unguided", s)]
        print(f"{s}: DoG/CFG time {dog / cfg:.2f}, CFG/unguided {cfg / plain:.2f}, "
              f"DoG/unguided {dog / plain:.2f}")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
