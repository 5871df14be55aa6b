"""``dog finetune`` and ``dog pretrain``: the training loop driven by a preset, a config file and overrides.

Multi-process (DDP; gloo on CPU, nccl on GPU; same global batch and same result as one process)::

    torchrun --standalone --nproc_per_node=4 $(which dog) finetune --preset dit-xl2-imagenet-published \\
        --set base=DiT-XL-2-256x256.pt data.dataset=/data/food101/train vae=/models/sd-vae-ft-ema
    torchrun --standalone --nproc_per_node=2 -m domain_guidance.cli pretrain --preset cpu-tiny
"""
from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
configuration (later wins): defaults < --preset < --config FILE < shortcut flags < --set KEY=VALUE.
Keys are TrainConfig fields; nested ones use dots: data.dataset, data.classes, lora.rank, ema.decay,
ema.warmup, grid.num... Values are parsed as JSON/YAML (1e-4, [0,1,2], null, true).
A base given explicitly (--base, base= in --config or --set) means init=base, also over a preset that
pre-trains (cpu-tiny); an explicit init=scratch together with it is an error.

presets:
{presets}

run directory (--out): train_config.json (resolved config), log.jsonl, tb/ (TensorBoard), grids/*.png,
checkpoints/step_NNNNNNN/ (EMA weights for `dog sample` + train_state.pt for --resume) and
checkpoints/latest. Sample a run with: dog sample --model OUT/checkpoints/latest --guide BASE --method dog
(a LoRA run needs no --guide: the base with the adapter off is the guide).

multi-process: torchrun --standalone --nproc_per_node=N $(which dog) {cmd} ...
(or: torchrun ... -m domain_guidance.cli {cmd} ...); --set batch_size is the GLOBAL batch.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    from ..pipelines.training.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named recipe to start from (default: none, plain TrainConfig defaults)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="TOML/YAML/JSON config file (may name its own `preset`); default: none")
    p.add_argument("--set", dest="sets", metavar="KEY=VALUE", action="append", nargs="+", default=[],
                   help="override any config key, e.g. --set lr=3e-4 data.dataset=digits lora.rank=8 (repeatable)")
    p.add_argument("--out", default=None, help="run directory (default: the preset's / config's `out`, "
                                               "else runs/finetune)")
    p.add_argument("--data", default=None, help="shortcut for data.dataset: built-in name (digits, animal-mnist) "
                                                "or a folder of class sub-folders (default: from the config)")
    p.add_argument("--steps", type=int, default=None, help="shortcut for steps, total optimizer steps "
                                                          "(default: from the config; 24000 for the published recipe)")
    p.add_argument("--batch-size", type=int, default=None, help="shortcut for batch_size, the GLOBAL batch split "
                                                                "over processes (default: from the config, 32)")
    p.add_argument("--device", default=None, help="shortcut for device: auto, cpu or cuda (default: auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly from checkpoints/latest (starts fresh if none); "
                        "default: refuse to touch a run directory that already has checkpoints")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    p.add_argument("--compile", action="store_true", help="shortcut for compile=true: torch.compile the network "
                   "(the first step pays the compile time; eager with a logged note where it cannot compile)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")


def register(sub: argparse._SubParsersAction) -> None:
    from ..pipelines.training.presets import describe_presets

    fmt = argparse.RawDescriptionHelpFormatter
    ft = sub.add_parser(
        "finetune", help="fine-tune a pre-trained DiT on a target domain (full or LoRA), resumable",
        description="Fine-tune a pre-trained DiT (official .pt, ours, diffusers or a run directory) on a target "
                    "image domain, full or with LoRA, with EMA, checkpoints, logs and sample grids. "
                    "The result samples unguided, with CFG (label dropout > 0) or with Domain Guidance.",
        epilog=EPILOG.format(presets=describe_presets(), cmd="finetune"), formatter_class=fmt)
    _add_common(ft)
    ft.add_argument("--base", default=None, help="shortcut for base=PATH and init=base: the pre-trained checkpoint or "
                                                 "run directory to start from, also over a scratch preset such as "
                                                 "cpu-tiny (default: from the config; required unless init=scratch)")
    ft.add_argument("--mode", choices=["full", "lora", "difffit"], default=None,
                    help="full fine-tuning, LoRA, or DiffFit (biases, per-block scales and the label table only; "
                    "the guide is the base with them off; DiffFit's paper trains at about 10x the rate: the preset "
                    "dit-xl2-imagenet-difffit uses lr 1e-3, elsewhere set lr yourself) (default: from the config, full)")
    ft.add_argument("--single-pass", dest="single_pass", type=float, default=None, metavar="W",
                    help="shortcut for single_pass.enabled=true single_pass.w=W: bake DoG at weight W into the "
                    "target (DogFit), so the result samples unguided at one network evaluation per step; see "
                    "single_pass.start_step / cutoff / w_cond (default: off)")
    ft.set_defaults(func=run_finetune)

    pt = sub.add_parser(
        "pretrain", help="train a source DiT from scratch (the same loop, init=scratch)",
        description="Pre-train a DiT from scratch on a (source) dataset with label dropout, e.g. the source model "
                    "of the embedded demo: dog pretrain --preset animal-source.",
        epilog=EPILOG.format(presets=describe_presets(), cmd="pretrain"), formatter_class=fmt)
    _add_common(pt)
    pt.add_argument("--model", default=None, help="shortcut for model: DiT size such as T/2, M/2, S/2, XL/2 "
                                                  "(default: from the config, T/2)")
    pt.set_defaults(func=run_pretrain)


def _resolve(args: argparse.Namespace, pretrain: bool):
    from ..pipelines.training.config import PRESETS, resolve_config

    sets = [s for group in args.sets for s in group]
    flags = {"--out": ("out", args.out), "--data": ("data.dataset", args.data), "--steps": ("steps", args.steps),
             "--batch-size": ("batch_size", args.batch_size), "--device": ("device", args.device),
             "--base": ("base", getattr(args, "base", None)), "--mode": ("mode", getattr(args, "mode", None)),
             "--model": ("model", getattr(args, "model", None))}
    shortcuts = [(flag, f"{key}={value}") for flag, (key, value) in flags.items() if value is not None]
    if args.no_progress:
        shortcuts.append(("--no-progress", "progress=false"))
    if args.compile:
        shortcuts.append(("--compile", "compile=true"))
    if getattr(args, "single_pass", None) is not None:
        shortcuts += [("--single-pass", "single_pass.enabled=true"), ("--single-pass", f"single_pass.w={args.single_pass}")]
    if pretrain:
        shortcuts.insert(0, ("dog pretrain", "init=scratch"))
        preset = PRESETS.get(args.preset or "", {})
        if preset.get("init", "scratch") != "scratch" or preset.get("base"):
            raise ValueError(f"preset {args.preset!r} fine-tunes a base; use `dog finetune --preset {args.preset}`")
    cfg = resolve_config(args.preset, args.config, sets, shortcuts=shortcuts)
    if pretrain and (cfg.init != "scratch" or cfg.mode != "full"):
        raise ValueError("dog pretrain trains a new DiT: init must be 'scratch' and mode 'full' "
                         "(use dog finetune for a pre-trained base)")
    return cfg


def _run(args: argparse.Namespace, pretrain: bool) -> int:
    from ..pipelines.training.loop import summarize, train
    from . import check_out_dir

    cfg = _resolve(args, pretrain)
    if args.print_config:
        print(cfg.to_json())
        return 0
    check_out_dir(cfg.out, "--out" if args.out is not None else "out (the run directory)")
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summarize(result), file=sys.stderr)
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    return _run(args, pretrain=False)


def run_pretrain(args: argparse.Namespace) -> int:
    return _run(args, pretrain=True)
