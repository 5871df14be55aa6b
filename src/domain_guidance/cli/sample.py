"""``dog sample``: draw samples unguided, with CFG or with Domain Guidance."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ..core.guidance import METHODS
from ..core.sampling import SAMPLERS


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def seed_list(text: str) -> list[int]:
    """argparse type for --seeds: '0-49999', '1,2,3' (checked before any list is built)."""
    from ..pipelines.generate import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("seeds: ")) from None


def interval(text: str) -> tuple[float, float]:
    """argparse type for --interval: LO,HI in original timesteps."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 0,700), got {text!r}") from None
    return lo, hi


def key_value(text: str) -> tuple[str, object]:
    """argparse type for --sampler-option: KEY=VALUE; the value is a number if it reads as one (1e-5, 4e-2, 3), else
    YAML (true, null, sigma): YAML 1.1 alone reads 1e-5 (no dot) as a string."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. diffusion_form=sigma), got {text!r}")
    for number in (int, float):
        try:
            return key.strip(), number(value.strip())
        except ValueError:
            pass
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def as_option(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a ValueError whose message starts with a settings field ("eta: ...") names the option."""
    try:
        return fn()
    except ValueError as e:
        field, sep, rest = str(e).partition(": ")
        if sep and field.isidentifier():
            flag = "sampler-option" if field == "options" else field.replace("_", "-")
            raise ValueError(f"--{flag}: {rest}") from None
        raise


def given_options(args: argparse.Namespace, names: list[str]) -> list[str]:
    """The options among ``names`` that the command line set (a value other than the parser's default)."""
    default_of = getattr(args, "default_of", lambda name: None)
    return [n for n in names if hasattr(args, n) and getattr(args, n) not in (None, [], default_of(n))]


def refuse_inapplicable(args: argparse.Namespace, context: Any, rules: Any) -> None:
    """Refuse every given option that ``rules`` (pipelines.applicability) declare ignored in ``context``."""
    from ..pipelines.applicability import check_applicable

    check_applicable(given_options(args, [r.option for r in rules]), context, rules)


def check_predictions(args: argparse.Namespace, prediction: str, guide_prediction: str | None) -> None:
    """Refuse a --sampler that cannot integrate what the loaded model predicts, or a guide read as predicting
    something else, saying which flag fixes it."""
    if guide_prediction not in (None, prediction) and args.prediction == "auto":
        raise ValueError(f"--model {args.model} predicts {prediction!r} but --guide {args.guide} is read as "
                         f"predicting {guide_prediction!r} (a file without a config, such as the official raw "
                         "SiT-XL-2-256x256.pt, cannot say what it predicts): if both are SiT (flow-matching) "
                         "models pass --prediction velocity; a DiT cannot guide a SiT model")
    spec = SAMPLERS[args.sampler]
    if prediction in spec.predictions:
        return
    fitting = ", ".join(sorted(n for n, s in SAMPLERS.items() if prediction in s.predictions))
    head = (f"--sampler {args.sampler} integrates {'/'.join(spec.predictions)} predictions, but --model "
            f"{args.model} predicts {prediction!r}")
    if prediction == "eps" and "velocity" in spec.predictions and args.prediction == "auto":
        raise ValueError(f"{head} (read from the checkpoint; a file without a config, such as the official raw "
                         "SiT-XL-2-256x256.pt, cannot say what it predicts): for SiT (flow-matching) weights pass "
                         f"--prediction velocity; for a DiT use one of {fitting}")
    declared = f" (declared by --prediction {args.prediction})" if args.prediction != "auto" else ""
    raise ValueError(f"{head}{declared}: pass --sampler one of {fitting}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="draw samples (unguided, CFG or DoG) to a PNG grid, .npz and settings JSON",
        description="Draw samples from a fine-tuned model, unguided, with CFG, or with Domain Guidance "
                    "(the pre-trained model as unconditional guide). Resumable: a rerun with the same settings "
                    "continues; other settings into a used --out are refused (--overwrite replaces). Run under "
                    "`torchrun --nproc_per_node=N` to split the seeds over processes (the same images up to "
                    "float rounding).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="fine-tuned checkpoint: our run/checkpoint dir, .safetensors, "
                   "official DiT .pt, a DiT training checkpoint, a diffusers DiT folder or a LoRA dir")
    p.add_argument("--guide", default=None, help="pre-trained checkpoint used as DoG guide (not for LoRA: "
                   "a LoRA model guides with its own base)")
    p.add_argument("--prediction", choices=["auto", "eps", "velocity"], default="auto",
                   help="what --model and --guide predict: auto reads it from the checkpoint (our configs, a SiT "
                   "training checkpoint's args; a file without a config counts as eps); velocity for official raw "
                   "SiT weights (SiT-XL-2-256x256.pt). A LoRA dir's stored configs win")
    p.add_argument("--autoguide", default=None, help="guide checkpoint of --method autoguidance: a weaker model of "
                   "the same classes (an earlier checkpoint of the fine-tune, a smaller model), called at the same label")
    p.add_argument("--model-w", type=float, default=None, help="w fed to a w-conditioned single-pass model "
                   "(sampled with --method unguided: one network evaluation per step); default: the w it records")
    p.add_argument("--method", choices=METHODS, default="dog", help="guidance method (a single-pass model: unguided)")
    p.add_argument("--scale", "-w", type=float, default=1.5, help="guidance weight w")
    p.add_argument("--channels", type=positive_int, default=None,
                   help="guide only the first N eps channels (3 reproduces the authors' release); default all")
    p.add_argument("--interval", type=interval, default=None,
                   help="guide only for network times LO,HI: original timesteps within 0..999 for ddpm/ddim (e.g. "
                   "0,700) and the diffusers schedulers of eps models, SiT time within 0..1 (0 = noise) for the "
                   "flow and flow-* samplers")
    p.add_argument("--interval-sigma", type=interval, default=None, metavar="LO,HI",
                   help="guide only where the noise level sigma is in (LO, HI] (Kynkaanniemi et al. 2024), converted "
                   "to network times for the sampler's schedule (DiT's or SiT's); EDM2's recommended 0.28,5.42 is "
                   "DDPM t in [82, 578]. Instead of --interval")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="ddpm",
                   help="; ".join(f"{k}: {v.help}" for k, v in sorted(SAMPLERS.items())))
    p.add_argument("--steps", default="250", help="ddpm/ddim respacing: '250', '50', 'ddim50', '10,10,5' (at least "
                   "2 steps); flow samplers: integration steps ('50'; ode-heun evaluates twice per step); diffusers "
                   "schedulers (dpm-solver++, unipc, deis, euler, heun, flow-*): inference steps ('20'; heun: "
                   "2N - 1 evaluations)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (ddim only)")
    p.add_argument("--sampler-option", dest="sampler_options", type=key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="a further option of the sampler, e.g. diffusion_form=sigma, "
                   "last_step_size=0.04 (sde-euler), rtol=1e-5 (ode-dopri5), order=3 or use_karras_sigmas=true "
                   "(dpm-solver++); repeatable; part of the settings key")
    p.add_argument("--clip-denoised", choices=["auto", "yes", "no"], default="auto",
                   help="clip predicted x0 to [-1, 1]; auto: yes for pixel models, no for latents (as DiT)")
    p.add_argument("--seeds", type=seed_list, default="0-63", help="per-sample seeds: '0-49999', '1,2,3'")
    p.add_argument("--labels", default=None, help="one label, or one per seed (comma separated); "
                   "default class-balanced (seed index mod K)")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="images per forward pass (does not change images)")
    p.add_argument("--shard-size", type=positive_int, default=1000, help="images per resumable shard")
    p.add_argument("--vae", default=None, help="VAE dir or hub id for latent models (default: from config)")
    p.add_argument("--latent-scale", type=float, default=None, help="latent scale (default from config, 0.18215)")
    p.add_argument("--which", choices=["ema", "model"], default="ema", help="weights of a training checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16", "fp16"], default="auto",
                   help="network arithmetic (autocast; the diffusion arithmetic stays float32): auto = fp32 on a CPU, "
                   "tf32 on a CUDA GPU that has it (as the authors' script); part of the settings key")
    p.add_argument("--compile", action="store_true", help="run the networks through torch.compile (first batch "
                   "pays the compile time; falls back to eager with a one-line note where unavailable)")
    p.add_argument("--png", action="store_true", help="also write one PNG per sample to OUT/images")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace samples in --out that were made with other settings (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run, default_of=p.get_default)  # default_of: which options the command line gave


def run(args: argparse.Namespace) -> int:
    from ..core.precision import resolve_precision
    from ..io.distributed import init_distributed, shutdown
    from ..pipelines.generate import GenerationSettings, generate, load_models, parse_labels
    from . import check_out_dir

    from ..pipelines.applicability import SAMPLING_RULES, Context

    check_out_dir(args.out)
    # an option the run would ignore (--guide with cfg, --clip-denoised with a flow sampler...) is refused first
    refuse_inapplicable(args, Context(sampler=args.sampler, methods=frozenset({args.method})), SAMPLING_RULES)
    if args.interval_sigma is not None:  # sigma -> the sampler's network times; checked by GenerationSettings
        from ..core.interval import sigma_interval

        if args.interval is not None:
            raise ValueError("--interval and --interval-sigma both given; pass one (times or noise levels)")
        args.interval = sigma_interval(*args.interval_sigma, SAMPLERS[args.sampler].time_range)
    clip = {"auto": None, "yes": True, "no": False}[args.clip_denoised]
    # the settings are checked before any model is loaded: a typo costs nothing
    probe = as_option(lambda: GenerationSettings(
        method=args.method, scale=args.scale, channels=args.channels, interval=args.interval, sampler=args.sampler,
        steps=args.steps, eta=args.eta, clip_denoised=clip, options=dict(args.sampler_options),
        precision=args.precision, seeds=args.seeds, model_w=args.model_w))
    dist = init_distributed(args.device)
    try:
        as_option(lambda: resolve_precision(args.precision, dist.device))  # tf32 on a CPU: refused before loading
        models = load_models(args.model, args.guide, which=args.which, vae=args.vae, latent_scale=args.latent_scale,
                             device=dist.device, prediction=args.prediction, autoguide=args.autoguide)
        guide_prediction = models.guide.prediction if models.guide is not None else None
        check_predictions(args, models.config.prediction, guide_prediction)
        labels = as_option(lambda: parse_labels(args.labels, len(args.seeds), models.config.num_classes))
        settings = GenerationSettings.from_dict({**probe.to_dict(), "labels": labels})
        record = generate(settings, models, args.out, batch_size=args.batch_size, shard_size=args.shard_size,
                          dist=dist, png_dir=args.png, progress=not args.no_progress, overwrite=args.overwrite,
                          compile=args.compile)
        note = (record.get("compile") or {}).get("note")
        if note and dist.is_main:
            print(note, file=sys.stderr)
        if dist.is_main:
            print(f"wrote {record['num_samples']} samples to {args.out} (samples.npz, grid.png, settings.json; "
                  f"{record['generated_now']} generated now)")
    finally:
        shutdown(dist)
    return 0
