"""``dog demo``: the embedded end-to-end transfer benchmark (glyphs or animal-mnist, CPU, minutes)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..pipelines.demo.config import FLOW_PRETRAIN_STEPS, DemoConfig, flow, full, quick
from ..pipelines.demo.domains import DEFAULT_TARGET, TARGETS
from .demo_study import add_study_arguments, study_config_from_args, wants_study

_Q = quick()


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` except where the default is None (the variant decides; the help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _interval(text: str) -> list[float]:
    """'lo,hi' -> [lo, hi]; 'none' -> [] (no interval row; an empty list, since None means "not given")."""
    return [] if text.strip().lower() == "none" else _floats(text)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo", help="end-to-end transfer benchmark: pre-train, fine-tune, unguided/CFG/DoG, FID, report",
        description="Shipped source model -> fine-tune on a target with few images -> sample unguided / CFG / DoG "
                    "over a w grid with the same seeds -> FID (real Inception), a CNN judge and (glyphs) the exact "
                    "domain rate, against real floors -> OUT/report.md. Targets: covered (default; blue glyph shapes "
                    "the source holds), outside (blue glyph shapes the source never saw), animal (animal-mnist "
                    "classes 6-9 after a source on 0-5). Stages are cached under --out; a rerun resumes. "
                    "Defaults shown are the quick variant's, covered target.",
        formatter_class=_Formatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="README size (the default)")
    size.add_argument("--full", action="store_true",
                      help="larger variant: 500 samples, 3 seed replicates, w in {1.25,1.5,2,3,4}, 50 steps, "
                           "all 800 held-out reference images, also a no-dropout fine-tune (hours on a CPU)")
    p.add_argument("--target", choices=sorted(TARGETS), default=None,
                   help=f"which benchmark (docs/demo.md) [default: {DEFAULT_TARGET}; with --flow: animal]")
    p.add_argument("--flow", action="store_true",
                   help="flow-matching variant: a velocity (SiT) source and fine-tune, ODE Heun sampling with about "
                        "the network evaluations of the DDIM steps (12 for 25), the DoG interval in SiT time at the "
                        "same noise levels ([0, 0.23]); out dir runs/demo-flow; combines with --full")
    p.add_argument("--out", default=None, help=f"output folder (full: runs/demo-full, flow: runs/demo-flow; other "
                                               f"targets: -<target> appended) [default: {_Q.out}]")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", default=None,
                     help=f"source checkpoint or `dog pretrain` run dir; an error if it does not exist or holds no "
                          f"checkpoint [default: {_Q.source}]")
    src.add_argument("--pretrain", action="store_true",
                     help=f"pre-train the source model here instead ({_Q.source_preset} preset into OUT/source, "
                          "resumed if already started; hours on a CPU)")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help=f"steps of the --pretrain pre-training [default: {_Q.pretrain_steps}; animal: 9000; "
                        f"--flow: {FLOW_PRETRAIN_STEPS}]")
    p.add_argument("--finetune-steps", type=int, default=None, help=f"[default: the target's: {_Q.finetune_steps} "
                                                                            f"(covered, outside), 1000 (animal)]")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help=f"fine-tune learning rate [default: {_Q.finetune_lr:g}; the search behind it: "
                        "docs/regime-search.md]")
    p.add_argument("--images-per-class", type=int, default=None, help=f"target images per class "
                                                                      f"[default: {_Q.images_per_class}]")
    p.add_argument("--samples", type=int, default=None, help=f"samples per setting [default: {_Q.samples}]")
    p.add_argument("--w", type=_floats, default=None, help=f"guidance weights, e.g. '1.5,3' [default: {_Q.w}]")
    p.add_argument("--seeds", type=_ints, default=None,
                   help=f"seed replicates, e.g. '0,1,2' [default: {_Q.seeds}]")
    p.add_argument("--steps", type=int, default=None, help=f"sampler steps [default: {_Q.steps}]")
    p.add_argument("--sampler", choices=("ddim", "ddpm", "ode-euler", "ode-heun", "ode-dopri5", "sde-euler"),
                   default=None, help=f"ddim / ddpm (eps demo), ode-* / sde-euler (--flow) [default: {_Q.sampler}; "
                                      "--flow: ode-heun]")
    p.add_argument("--reference-images", type=int, default=None,
                   help=f"held-out target images used as reference [default: {_Q.reference_images}]")
    p.add_argument("--dog-interval", type=_interval, default=None,
                   help=f"DoG is also sampled guided only for DDPM timesteps lo..hi (--flow: SiT time, 0 = noise; "
                        f"the default's 0.16,0.78); 'none': no interval row [default: {_Q.dog_interval}: EDM2's "
                        f"recommended sigma in (0.28, 5.42] on the DiT schedule]")
    p.add_argument("--also-without-dropout", action="store_true", help="also fine-tune with label dropout 0")
    p.add_argument("--no-fid", action="store_true", help="skip Inception FID (classifier metrics only)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_study_arguments(p)
    p.set_defaults(func=run, default_of=p.get_default)  # default_of: which options the command line gave


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The variant's DemoConfig with the given options applied."""
    target = args.target or ("animal" if args.flow else DEFAULT_TARGET)
    cfg = full(target) if args.full else quick(target)
    if args.flow:
        cfg = flow(cfg)
    if args.source is not None:
        cfg.source = args.source
    cfg.pretrain = args.pretrain
    for name in ("out", "pretrain_steps",
                 "finetune_steps", "finetune_lr", "images_per_class", "samples", "w", "seeds", "steps", "sampler",
                 "reference_images", "dog_interval"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if cfg.dog_interval == []:
        cfg.dog_interval = None
    cfg.also_without_dropout = cfg.also_without_dropout or args.also_without_dropout
    cfg.fid = not args.no_fid
    cfg.progress = not args.no_progress
    return cfg.validate()


def refuse_inapplicable_demo(args: argparse.Namespace) -> None:
    """Refuse a mode's option without its mode (--grid-w without --ablation nine-grid...), before any work."""
    from ..pipelines.applicability import DEMO_RULES, Context
    from .sample import refuse_inapplicable

    ablations = frozenset(a for group in args.ablation or [] for a in group)
    refuse_inapplicable(args, Context(study=bool(args.study), ablations=ablations, pretrain=bool(args.pretrain)),
                        DEMO_RULES)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.demo.run import ensure_source, run_demo
    from . import check_out_dir
    from .sample import as_option

    refuse_inapplicable_demo(args)
    cfg = as_option(lambda: config_from_args(args))  # "dog_interval: ..." names --dog-interval
    if wants_study(args):  # --study / --ablation: the map and the ablations (study_config_from_args)
        from ..pipelines.demo.study import run_study

        study = study_config_from_args(args, cfg)
        check_out_dir(study.base.out, "--out")
        if not study.base.pretrain:
            ensure_source(study.base, Path(study.base.out))  # a missing --source fails before anything is written
        run_study(study)
        print(f"dog demo --study: wrote {study.base.out}/report.md and study.json")
        return 0
    check_out_dir(cfg.out, "--out")
    if not cfg.pretrain:
        ensure_source(cfg, Path(cfg.out))  # a missing --source fails now, before anything is written
    results = run_demo(cfg)
    print(f"dog demo: wrote {results['config']['out']}/report.md and results.json")
    return 0
