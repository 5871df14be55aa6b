"""``dog reproduce NAME``: one paper row, prepare -> fine-tune -> sample -> evaluate -> table, resumable.

    dog reproduce food101 --from ~/Downloads/food-101.tar.gz --base DiT-XL-2-256x256.pt \\
        --vae /models/sd-vae-ft-ema --dinov2 /models/dinov2-large --out runs/food101
    torchrun --standalone --nproc_per_node=8 $(which dog) reproduce food101 ...   # same result on 8 GPUs
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EPILOG = """\
rows (published numbers are printed beside ours):
{rows}

protocol presets (--protocol): {presets}
  published: training preset dit-xl2-imagenet-published (DiT-XL/2-256, 24,000 steps, batch 32, AdamW 1e-4,
  EMA 0.9999, label dropout 0.1); unguided / CFG / DoG at w=1.5 on latent channels 0-2 (DiT's sampler),
  DDPM 50 steps, 10,000 samples; FID and FD_DINOv2 against a seeded subset of 10,000 real images
  (dgm-eval --nsample 10000) under both evaluation protocols (dgm-eval-clean, the published one, and
  pytorch-fid); Food-101 on all 101,000 images. published-all-channels: guides all 4 latent channels
  (not comparable). published-50k: 50,000 samples. published-250: 250 DDPM steps.
  The table's 'comparable' column names the first field that differs from the published protocol.
  cpu-tiny: a tiny pixel DiT for a first run on a CPU (its base: dog pretrain --preset cpu-tiny).

--set KEY=VALUE sets any ReproduceConfig key; train.KEY sets a key of the fine-tune's TrainConfig
(train.steps=2000, train.data.latent_cache=false). Rerun the same command to resume after any stop.
output: data/ (prepared), finetune/ (run), samples/<method>-w<w>/, reference/, metrics/, results.json, table.md
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ..pipelines.reproduce import PRESETS, STAGES, describe_benchmarks

    p = sub.add_parser("reproduce", help="one paper row: prepare, fine-tune, sample (unguided/CFG/DoG), evaluate, "
                                         "table (resumable, torchrun-aware)",
                       description="Reproduce one row of the paper's seven benchmarks from your own downloads and "
                                   "the pre-trained DiT-XL/2 checkpoint; every stage is kept and skipped on a rerun.",
                       epilog=EPILOG.format(rows=describe_benchmarks(), presets=", ".join(PRESETS)),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="the row: a dataset of `dog data list` (omit with --list)")
    p.add_argument("--list", action="store_true", help="print the rows and the published numbers, then exit")
    p.add_argument("--from", dest="source", action="append", default=None, metavar="ARCHIVE_OR_DIR",
                   help="what you downloaded for this dataset (repeatable); prepared into OUT/data")
    p.add_argument("--data", default=None, help="a folder already made by `dog data prepare NAME` (instead of --from)")
    p.add_argument("--base", default=None, help="the pre-trained checkpoint (DiT-XL-2-256x256.pt), also the DoG guide")
    p.add_argument("--vae", default=None, help="VAE folder or hub id (default: the training preset's "
                                               "stabilityai/sd-vae-ft-ema)")
    p.add_argument("--dinov2", default=None, help="DINOv2 ViT-L/14 folder or hub id for FD_DINOv2 "
                                                  "(default facebook/dinov2-large)")
    p.add_argument("--inception-weights", default=None, help="FID Inception weights (default: shipped, offline)")
    p.add_argument("--out", default=None, help="output folder (default runs/reproduce-NAME)")
    p.add_argument("--protocol", choices=sorted(PRESETS), default="published",
                   help="protocol preset (default published)")
    p.add_argument("--num-samples", type=int, default=None, help="samples per method (default: the preset's, 10000)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda (default: the preset's, auto)")
    p.add_argument("--set", dest="sets", metavar="KEY=VALUE", action="append", nargs="+", default=[],
                   help="override a ReproduceConfig key, train.* for the fine-tune (repeatable)")
    p.add_argument("--stop-after", choices=STAGES, default="table", help="last stage to run (default table)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (and the fine-tune's) and exit")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--dry-run", nargs="?", const="dit,sit", default=None, metavar="dit,sit",
                   help="the published chain at full size with random weights on a fake 256 px target (CPU; per "
                        "stage time, peak RSS, FLOPs, projected GPU time; a memory plan); no result is written. "
                        "Families: dit (DiT-XL/2), sit (SiT-XL/2), default both; --base/--vae/--dinov2 replace the "
                        "random stand-ins (default --out runs/reproduce-NAME-dry-run)")
    p.add_argument("--gpu-peak-tflops", type=float, default=None,
                   help="--dry-run: the GPU peak its projection assumes (default 156, an A100's TF32 dense peak)")
    p.add_argument("--gpu-utilisation", type=float, default=None,
                   help="--dry-run: the share of that peak reached (default 0.4)")
    p.set_defaults(func=run)


def _nested(sets: list[str]) -> dict:
    """``a.b=VALUE`` items as a nested dict; values parsed as YAML (10, 1e-4, [1,2], true, null)."""
    import yaml

    out: dict = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[parts[-1]] = value
    return out


def run(args: argparse.Namespace) -> int:
    from ..pipelines.reproduce import describe_benchmarks, reproduce, resolve, train_config

    if args.list:
        print(describe_benchmarks())
        return 0
    if not args.name:
        raise ValueError("dog reproduce: name the row (one of `dog reproduce --list`)")
    if args.dry_run is not None:
        return _dry_run(args)
    over = _nested([s for group in args.sets for s in group])
    flags = {"source": args.source, "data": args.data, "base": args.base, "vae": args.vae,
             "dinov2_model": args.dinov2, "inception_weights": args.inception_weights,
             "num_samples": args.num_samples, "device": args.device}
    over.update({k: v for k, v in flags.items() if v is not None})
    cfg = resolve(args.name, args.protocol, over)
    out = Path(args.out or f"runs/reproduce-{args.name}")
    if args.print_config:
        print(json.dumps({"reproduce": cfg.to_dict(), "finetune": train_config(cfg, out).to_dict()}, indent=2))
        return 0
    from . import check_out_dir

    check_out_dir(out)
    report = reproduce(cfg, out, stop_after=args.stop_after, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for stage, info in report["stages"].items():
        print(f"{stage}: {json.dumps(info, default=str)}", file=sys.stderr)
    if "rows" in report:
        print((out / "table.md").read_text())
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    from ..pipelines.reproduce.dry_run import dry_run
    from ..pipelines.reproduce.measure import GpuAssumption

    gpu = GpuAssumption()
    if args.gpu_peak_tflops is not None or args.gpu_utilisation is not None:
        gpu = GpuAssumption(name="the GPU of --gpu-peak-tflops" if args.gpu_peak_tflops is not None else gpu.name,
                            peak_tflops=args.gpu_peak_tflops or gpu.peak_tflops,
                            utilisation=args.gpu_utilisation or gpu.utilisation)
    given = {"base": args.base, "vae": args.vae, "dinov2": args.dinov2, "inception": args.inception_weights}
    if args.base and "," in args.dry_run:
        raise ValueError("--dry-run with --base: name the one family the checkpoint is (--dry-run dit or sit)")
    out = Path(args.out or f"runs/reproduce-{args.name}-dry-run")
    from . import check_out_dir

    check_out_dir(out)
    dry_run(args.name, out, tuple(f.strip() for f in args.dry_run.split(",") if f.strip()), given, gpu)
    print((out / "dry_run.md").read_text())
    return 0
