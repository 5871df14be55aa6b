"""``dog toy``: the 2-D mixture-of-Gaussians study (CFG vs Domain Guidance, exact and learned)."""
from __future__ import annotations

import argparse
import time


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _seeds(text: str) -> tuple[int, ...]:
    """"3" -> (0, 1, 2); "0,5,7" -> (0, 5, 7)."""
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return tuple(range(n))
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed count (e.g. 3) or a list (e.g. 0,5,7), got {text!r}") \
            from None


def register(subparsers) -> None:
    from ..pipelines.toy.config import PRESETS, ToyConfig

    d = ToyConfig()
    p = subparsers.add_parser(
        "toy", help="2-D mixture-of-Gaussians study: CFG vs Domain Guidance (exact and learned scores)",
        description="Sample a 2-D target domain with CFG and with Domain Guidance, using closed-form "
                    "scores (exact track) and small MLP denoisers pre-trained on the source and "
                    "fine-tuned on a few target points (learned track). Writes toy_<track>.png, "
                    "metrics.json, config.json and samples.npz to --out and prints a table. "
                    "Precedence: built-in defaults < --preset < --config file < command-line flags.",
    )
    p.add_argument("--out", default="runs/toy", help="output directory (default: runs/toy)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="named scenario variant (default: default)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON or TOML file of ToyConfig overrides, keys as in config.json (default: none)")
    p.add_argument("--track", default=None, choices=("exact", "learned", "both"),
                   help="which track(s) to run (default: both)")
    p.add_argument("--w", type=_floats, default=None, metavar="W1,W2,...",
                   help=f"guidance weights (default: {','.join(f'{w:g}' for w in d.ws)})")
    p.add_argument("--seeds", type=_seeds, default=None, metavar="N|S1,S2,...",
                   help="N for seeds 0..N-1, or a comma list (one seed S: 'S,') "
                        f"(default: {','.join(map(str, d.seeds))})")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help=f"samples per target class per run (default: {d.samples_per_class})")
    p.add_argument("--sampler", default=None, choices=("ddpm", "ddim"),
                   help=f"core sampler (fixed variance) (default: {d.sampler})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"respaced sampling steps (default: {d.steps})")
    p.add_argument("--figure-w", type=float, default=None,
                   help=f"guidance weight shown in the figure, one of --w, else the largest (default: {d.figure_w:g})")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help=f"learned track: pre-training steps (default: {d.pretrain_steps})")
    p.add_argument("--finetune-steps", type=int, default=None,
                   help=f"learned track: fine-tuning steps (default: {d.finetune_steps})")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch threads, 0 = torch's default (default: {d.threads})")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """ToyConfig from preset, config file and flags (later wins)."""
    from ..pipelines.toy.config import PRESETS, ToyConfig

    values = dict(PRESETS[args.preset])
    if args.config:
        values.update(ToyConfig.read_overrides(args.config))
    flags = {"tracks": None if args.track is None else (("exact", "learned") if args.track == "both" else (args.track,)),
             "ws": args.w, "seeds": args.seeds, "samples_per_class": args.samples, "sampler": args.sampler,
             "steps": args.steps, "figure_w": args.figure_w, "pretrain_steps": args.pretrain_steps,
             "finetune_steps": args.finetune_steps, "threads": args.threads}
    values.update({k: v for k, v in flags.items() if v is not None})
    return ToyConfig.from_dict(values, source="dog toy")


def run(args: argparse.Namespace) -> int:
    from ..pipelines.toy.run import format_table, run_toy
    from . import check_out_dir

    config = build_config(args)
    check_out_dir(args.out, "--out")
    t0 = time.perf_counter()
    results = run_toy(config, args.out, log=(lambda s: None) if args.quiet else print)
    print(format_table(results))
    if not args.quiet:
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in results["timing_s"].items())
        print(f"timing: {timing}; wall {time.perf_counter() - t0:.1f}s")
        print(f"wrote {args.out}/metrics.json, config.json, samples.npz, "
              + ", ".join(f"toy_{t}.png" for t in config.tracks))
    return 0
