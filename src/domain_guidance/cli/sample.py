"""``dog sample``: draw samples unguided, with CFG or with Domain Guidance."""
from __future__ import annotations

import argparse

from ..core.guidance import METHODS, build_guided_denoiser
from ..core.sampling import SAMPLERS
from ..io.checkpoints import checkpoint_sha256
from ..io.distributed import init_distributed, shutdown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="draw samples (unguided, CFG or DoG) to a PNG grid, .npz and settings JSON",
        description="Draw samples from a fine-tuned model, unguided, with CFG, or with Domain Guidance "
                    "(the pre-trained model as unconditional guide). Resumable; run under "
                    "`torchrun --nproc_per_node=N` to split the seeds over processes (same images).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="fine-tuned checkpoint: our run/checkpoint dir, .safetensors, "
                   "official DiT .pt, a DiT training checkpoint, a diffusers DiT folder or a LoRA dir")
    p.add_argument("--guide", default=None, help="pre-trained checkpoint used as DoG guide (not for LoRA: "
                   "a LoRA model guides with its own base)")
    p.add_argument("--method", choices=METHODS, default="dog", help="guidance method")
    p.add_argument("--scale", "-w", type=float, default=1.5, help="guidance weight w")
    p.add_argument("--channels", type=int, default=None,
                   help="guide only the first N eps channels (3 reproduces the authors' release); default all")
    p.add_argument("--interval", default=None, help="guide only for original timesteps LO,HI (e.g. 0,700)")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="ddpm: ancestral with learned variance")
    p.add_argument("--steps", default="250", help="respacing: '250', '50', 'ddim50', '10,10,5'")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--clip-denoised", choices=["auto", "yes", "no"], default="auto",
                   help="clip predicted x0 to [-1, 1]; auto: yes for pixel models, no for latents (as DiT)")
    p.add_argument("--seeds", default="0-63", help="per-sample seeds: '0-49999', '1,2,3'")
    p.add_argument("--labels", default=None, help="one label, or one per seed (comma separated); "
                   "default class-balanced (seed index mod K)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (does not change images)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per resumable shard")
    p.add_argument("--vae", default=None, help="VAE dir or hub id for latent models (default: from config)")
    p.add_argument("--latent-scale", type=float, default=None, help="latent scale (default from config, 0.18215)")
    p.add_argument("--which", choices=["ema", "model"], default="ema", help="weights of a training checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--png", action="store_true", help="also write one PNG per sample to OUT/images")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _interval(spec: str | None) -> tuple[float, float] | None:
    if not spec:
        return None
    try:
        lo, hi = (float(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"--interval must be LO,HI (e.g. 0,700), got {spec!r}") from None
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from ..pipelines.generate import GenerationSettings, generate, parse_labels, parse_seeds
    from ..pipelines.loading import load_denoisers, make_decoder, model_shape

    dist = init_distributed(args.device)
    try:
        ft, guide = load_denoisers(args.model, args.guide, which=args.which, device=dist.device)
        if args.method == "dog" and guide is None:
            raise ValueError("--method dog needs --guide (the pre-trained checkpoint) unless --model is a LoRA run")
        denoiser = build_guided_denoiser(args.method, ft, guide, args.scale, args.channels, _interval(args.interval))
        seeds = parse_seeds(args.seeds)
        clip = {"auto": not ft.config.latent, "yes": True, "no": False}[args.clip_denoised]
        extra = {"model": args.model, "guide": args.guide, "which": args.which,
                 "model_config": ft.config.to_dict(),
                 "guide_config": guide.config.to_dict() if guide is not None else None}
        if dist.is_main:
            extra["hashes"] = {k: checkpoint_sha256(v) for k, v in (("model", args.model), ("guide", args.guide))
                               if v is not None}
        settings = GenerationSettings(
            method=args.method, scale=args.scale, channels=args.channels, interval=_interval(args.interval),
            sampler=args.sampler, steps=args.steps, eta=args.eta, clip_denoised=clip, seeds=seeds,
            labels=parse_labels(args.labels, len(seeds), ft.config.num_classes), shard_size=args.shard_size,
            extra=extra)
        decode = make_decoder(ft.config, args.vae, args.latent_scale, dist.device)
        summary = generate(denoiser, settings, model_shape(ft.config), args.out, decode, args.batch_size, dist,
                           png_dir=args.png, progress=not args.no_progress)
        if dist.is_main:
            print(f"wrote {summary['num_samples']} samples to {args.out} (samples.npz, grid.png, settings.json)")
    finally:
        shutdown(dist)
    return 0
