"""Precision, compile and one-call LoRA-DoG: speed as ratios measured in one run, and the metric change.

Speed (random weights, DiT of ``--model`` on ``--input-size`` latents, DDIM ``--steps``, batch
``--batch``): for each precision, time per image of unguided / CFG / DoG sampling (all cases
interleaved round-robin, best of ``--rounds``), the achieved GFLOP/s (FLOPs counted by torch's
FlopCounterMode x evaluations counted by the denoisers) over the matmul peak measured at that
precision in the same run; LoRA-DoG in one call of 2N vs two calls; with ``--compile`` the
torch.compile time and speed-up of the network forward.

Quality (``--demo DIR``, an output folder of ``dog demo``, default runs/demo when it exists): the
demo's fine-tuned model and source guide, DoG at the demo's first w, ``--samples`` images per seed
replicate (the demo's seeds), sampled in memory at each precision and scored like the demo (FID and
KID on FID-Inception features against the demo's reference, the judge's class match). The change
against fp32 (same seeds, so paired) is compared with the replicate spread of fp32 (sample std over
the seed replicates): a precision whose mean change is larger than the spread is not a safe default.

    python benchmarks/bench_precision.py [--model S/2] [--input-size 16] [--batch 16] [--steps 2]
        [--rounds 2] [--compile] [--demo runs/demo] [--samples 100] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import (build_nets, evaluations, forward_flops, guided, matmul_peak, nominal_peak,  # noqa: E402
                    round_robin, sampler_run)

from domain_guidance.core.precision import CompiledModule, precision_context  # noqa: E402
from domain_guidance.io.distributed import pick_device  # noqa: E402


INTERVAL = (0.0, 499.0)  # guidance in the lower half of the timesteps: the guide is skipped above


def precisions_for(device: torch.device) -> list[str]:
    return ["fp32", "tf32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16", "fp16"]


def speed(args: argparse.Namespace, device: torch.device) -> dict:
    nets = build_nets(args.model, args.input_size, device)
    x = torch.randn(args.batch, *nets.shape, device=device)
    t = torch.full((args.batch,), 500, device=device)
    y = torch.arange(args.batch, device=device) % 10
    flops_per_sample = forward_flops(nets.ft, x, t, y) / args.batch
    out: dict = {"model": args.model, "input_size": args.input_size, "batch": args.batch, "steps": args.steps,
                 "gflop_per_forward_sample": flops_per_sample / 1e9, "precisions": {}}
    cases, dens = {}, {}
    for p in precisions_for(device):
        for m in ("unguided", "cfg", "dog"):
            dens[(p, m)] = guided(nets, m, p)
            cases[f"{p}/{m}"] = sampler_run(dens[(p, m)], nets, args.batch, args.steps, device)
    dens[("fp32", "dog-interval")] = dataclasses.replace(guided(nets, "dog", "fp32"), interval=INTERVAL)
    cases["fp32/dog-interval"] = sampler_run(dens[("fp32", "dog-interval")], nets, args.batch, args.steps, device)
    for fuse in (True, False):
        dens[("fp32", f"lora-{fuse}")] = guided(nets, "dog-lora", "fp32", fuse=fuse)
        cases[f"fp32/dog-lora-{'one' if fuse else 'two'}-call"] = sampler_run(dens[("fp32", f"lora-{fuse}")], nets,
                                                                             args.batch, args.steps, device)
    peaks = {p: matmul_peak(p, device) for p in precisions_for(device)}
    runs = args.rounds + 1  # round_robin's warm-up call counts too
    best = round_robin(cases, args.rounds, device)
    for p in precisions_for(device):
        row = {"matmul_peak_gflops": peaks[p], "nominal_peak_tflops": nominal_peak(device, p)}
        for m in ("unguided", "cfg", "dog"):
            sec = best[f"{p}/{m}"]
            evals_per_image = evaluations(dens[(p, m)]) / (runs * args.batch)
            achieved = flops_per_sample * evals_per_image * args.batch / sec / 1e9
            row[m] = {"s_per_image": sec / args.batch, "evaluations_per_image": evals_per_image,
                      "achieved_gflops": achieved, "of_matmul_peak": achieved / peaks[p]}
        out["precisions"][p] = row
    d = dens[("fp32", "dog-interval")]
    out["dog_interval"] = {"interval": list(INTERVAL), "s_per_image": best["fp32/dog-interval"] / args.batch,
                           "guide_evaluations_per_image": d.uncond.evaluations / (runs * args.batch),
                           "over_dog": best["fp32/dog-interval"] / best["fp32/dog"]}
    one, two = best["fp32/dog-lora-one-call"], best["fp32/dog-lora-two-call"]
    out["lora_dog"] = {"one_call_s_per_image": one / args.batch, "two_call_s_per_image": two / args.batch,
                       "two_over_one": two / one}
    if args.compile:
        out["compile"] = compile_speed(nets, x, t, y, args.rounds, device)
    return out


def compile_speed(nets, x, t, y, rounds: int, device: torch.device) -> dict:
    """torch.compile of the fine-tuned network: first-call seconds and forward speed-up (or the fallback note)."""
    compiled = CompiledModule(nets.ft)
    with torch.no_grad():
        compiled(x, t, y)
    if compiled.note:
        return {"note": compiled.note}

    def fwd(net):
        def run():
            with torch.no_grad(), precision_context("fp32", device):
                return net(x, t, y)
        return run

    best = round_robin({"eager": fwd(nets.ft), "compiled": fwd(compiled)}, max(rounds, 3), device)
    return {"compile_seconds": compiled.compile_seconds, "eager_s": best["eager"], "compiled_s": best["compiled"],
            "speedup": best["eager"] / best["compiled"]}


# ---- quality on the embedded benchmark -------------------------------------------------------

def quality(args: argparse.Namespace, precisions: list[str]) -> dict:
    from domain_guidance.pipelines.demo import classifier as judge
    from domain_guidance.pipelines.demo.config import DemoConfig
    from domain_guidance.pipelines.demo.run import RESOLUTION, reference_images
    from domain_guidance.pipelines.demo.scoring import Scorer, inception_features
    from domain_guidance.pipelines.generate import GenerationSettings, balanced_labels, load_models, sample_images
    from domain_guidance.pipelines.metrics import InceptionExtractor

    demo = Path(args.demo)
    cfg = DemoConfig.from_dict(json.loads((demo / "demo_config.json").read_text()))
    ckpt = demo / "finetune-ld0.1" / "checkpoints" / "latest"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: no fine-tuned checkpoint; run `dog demo --out {demo}` first")
    models = load_models(str(ckpt), guide=cfg.source)
    clf, _ = judge.train_classifier(demo, RESOLUTION, cfg.classifier_epochs, cfg.classifier_batch, progress=False,
                                    target=cfg.spec)
    ref = reference_images(cfg)
    inception = InceptionExtractor(None, device="cpu")
    ref_feats = inception_features(inception, ref, demo / "fid-reference.npz")
    scorer = Scorer(clf, cfg.target_classes, judge.features(clf, judge.uint8_to_input(ref, clf.channels)), inception,
                    ref_feats, cfg.kid_subsets, None, exact_domain=cfg.spec.exact_domain)
    w = float(cfg.w[0])
    n = args.samples
    labels = balanced_labels(n, models.config.num_classes)
    rows: dict[str, list[dict]] = {p: [] for p in precisions}
    images: dict[tuple[str, int], np.ndarray] = {}
    for rep in cfg.seeds:
        seeds = [rep * 100000 + i for i in range(n)]
        for p in precisions:
            s = GenerationSettings(method="dog", scale=w, sampler=cfg.sampler, steps=str(cfg.steps), seeds=seeds,
                                   labels=labels, precision=p)
            t0 = time.perf_counter()
            x = sample_images(s, models)  # (N, 1, 16, 16) in [-1, 1]
            sec = time.perf_counter() - t0
            img = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            images[(p, rep)] = img
            m = scorer(img, np.asarray(labels))
            rows[p].append({"seed": rep, "fid": m["fid"], "kid": m["kid"], "class_match": m["class_match"],
                            "s_per_image": sec / n})
    fp32 = rows["fp32"]
    out: dict = {"demo": str(demo), "method": "dog", "w": w, "samples": n, "seeds": cfg.seeds, "sampler": cfg.sampler,
                 "steps": cfg.steps, "per_precision": {}}
    for metric in ("fid", "kid", "class_match"):
        out[f"{metric}_replicate_spread"] = statistics.stdev([r[metric] for r in fp32])
    for p in precisions:
        entry: dict = {"replicates": rows[p]}
        for metric in ("fid", "kid", "class_match"):
            deltas = [a[metric] - b[metric] for a, b in zip(rows[p], fp32)]
            mean_delta = statistics.fmean(deltas)
            entry[metric] = {"mean": statistics.fmean(r[metric] for r in rows[p]), "mean_change_vs_fp32": mean_delta,
                             "within_spread": abs(mean_delta) <= out[f"{metric}_replicate_spread"]}
        diffs = [np.abs(images[(p, r)].astype(int) - images[("fp32", r)].astype(int)) for r in cfg.seeds]
        entry["pixels_changed"] = float(np.mean([(d > 0).mean() for d in diffs]))
        entry["max_pixel_change"] = int(max(d.max() for d in diffs))
        entry["safe_default"] = all(entry[m]["within_spread"] for m in ("fid", "kid"))
        out["per_precision"][p] = entry
    return out


def report(result: dict) -> None:
    sp = result.get("speed")
    if sp:
        print(f"speed: DiT-{sp['model']} on {sp['input_size']}x{sp['input_size']} latents, batch {sp['batch']}, "
              f"DDIM {sp['steps']} steps, {sp['gflop_per_forward_sample']:.2f} GFLOP per forward per sample "
              f"(counted); device {result['device']}, {result['threads']} threads")
        print(f"{'precision':9s} {'matmul peak':>12s} {'method':9s} {'s/img':>8s} {'NFE/img':>8s} {'GFLOP/s':>9s} "
              f"{'of peak':>8s} {'vs fp32':>8s}")
        base = sp["precisions"]["fp32"]
        for p, row in sp["precisions"].items():
            for m in ("unguided", "cfg", "dog"):
                r = row[m]
                print(f"{p:9s} {row['matmul_peak_gflops']:9.1f} GF/s {m:9s} {r['s_per_image']:8.4f} "
                      f"{r['evaluations_per_image']:8.1f} {r['achieved_gflops']:9.1f} {r['of_matmul_peak']:8.1%} "
                      f"{base[m]['s_per_image'] / r['s_per_image']:7.2f}x")
        for p, row in sp["precisions"].items():
            print(f"{p}: DoG / CFG time per image {row['dog']['s_per_image'] / row['cfg']['s_per_image']:.2f}x, "
                  f"unguided / CFG {row['unguided']['s_per_image'] / row['cfg']['s_per_image']:.2f}x")
        di = sp.get("dog_interval")
        if di:
            print(f"DoG guided only for t in {di['interval']} (fp32): {di['guide_evaluations_per_image']:.1f} guide "
                  f"evaluations per image of {sp['steps']}, time per image {di['over_dog']:.2f}x DoG's")
        lo = sp["lora_dog"]
        print(f"LoRA-DoG (fp32): two calls / one call of 2N = {lo['two_over_one']:.2f}x time per image")
        if "compile" in sp:
            c = sp["compile"]
            print(c["note"] if "note" in c else f"torch.compile: first call {c['compile_seconds']:.1f} s, forward "
                  f"speed-up {c['speedup']:.2f}x (eager {c['eager_s'] * 1e3:.1f} ms, compiled "
                  f"{c['compiled_s'] * 1e3:.1f} ms)")
    q = result.get("quality")
    if q:
        print(f"\nquality: {q['demo']} DoG w={q['w']:g}, {q['samples']} samples x {len(q['seeds'])} seed replicates, "
              f"{q['sampler']} {q['steps']} steps; replicate spread (fp32 std): FID {q['fid_replicate_spread']:.3f}, "
              f"KID {q['kid_replicate_spread']:.5f}, class match {q['class_match_replicate_spread']:.4f}")
        print(f"{'precision':9s} {'FID':>8s} {'dFID':>8s} {'KID':>9s} {'dKID':>9s} {'dmatch':>7s} {'px changed':>10s} "
              f"{'max dpx':>7s} {'s/img':>7s}  safe default")
        for p, e in q["per_precision"].items():
            s_img = statistics.fmean(r["s_per_image"] for r in e["replicates"])
            print(f"{p:9s} {e['fid']['mean']:8.3f} {e['fid']['mean_change_vs_fp32']:+8.3f} {e['kid']['mean']:9.5f} "
                  f"{e['kid']['mean_change_vs_fp32']:+9.5f} {e['class_match']['mean_change_vs_fp32']:+7.4f} "
                  f"{e['pixels_changed']:10.1%} {e['max_pixel_change']:7d} {s_img:7.4f}  "
                  f"{'yes' if e['safe_default'] else 'no (change beyond the replicate spread)'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="S/2", help="DiT registry size of the speed part (default S/2)")
    ap.add_argument("--input-size", type=int, default=16, help="latent side of the speed part (default 16: 128 px)")
    ap.add_argument("--batch", type=int, default=16, help="images per sampling batch (default 16)")
    ap.add_argument("--steps", type=int, default=2, help="DDIM steps of the speed part (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="round-robin rounds, best kept (default 2)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (compile time, speed-up)")
    ap.add_argument("--demo", default="runs/demo", help="dog demo output folder for the quality part ('' skips it)")
    ap.add_argument("--samples", type=int, default=100, help="samples per replicate in the quality part")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed part")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    device = pick_device(args.device)
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if not args.no_speed:
        result["speed"] = speed(args, device)
    if args.demo and Path(args.demo, "demo_config.json").exists():
        result["quality"] = quality(args, precisions_for(torch.device("cpu")))
    elif args.demo:
        print(f"(no quality part: {args.demo}/demo_config.json not found; run `dog demo` first)")
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
