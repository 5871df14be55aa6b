"""``dog demo --study`` / ``--ablation``: the options of the demo's study (a map of DoG vs CFG) and ablations."""
from __future__ import annotations

import argparse

from ..pipelines.demo.config import DemoConfig
from ..pipelines.demo.domains import TARGETS
from ..pipelines.demo.study_config import ABLATIONS, COVERAGE, StudyConfig

_S = StudyConfig()


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _targets(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in TARGETS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown target(s) {bad or text!r}; expected a comma list of "
                                         f"{', '.join(sorted(TARGETS))}")
    return names


def _ablations(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if "all" in names:
        return list(ABLATIONS)
    bad = [n for n in names if n not in ABLATIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown ablation(s) {bad or text!r}; expected a comma list of "
                                         f"{', '.join(ABLATIONS)} or 'all'")
    return names


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """The study's options on the ``demo`` parser."""
    g = p.add_argument_group(
        "study (long: hours on a CPU; resumes cell by cell)",
        "--study maps DoG vs CFG over coverage (target inside / outside the source's domain) x fine-tune steps x "
        "images per class (OUT/report.md: heat maps with resolved flags and floors); --ablation adds the paper's "
        "ablations, run on the base setting (--finetune-steps, "
        "--images-per-class). Without --out the study writes to runs/demo-study; its w defaults to 1.5 and it "
        "has no interval row unless --w / --dog-interval say otherwise.")
    g.add_argument("--study", action="store_true", help="run the DoG-vs-CFG map")
    g.add_argument("--study-targets", type=_targets, default=None, metavar="T,T,...",
                   help=f"the coverage axis [default: {','.join(COVERAGE['covered'])} for the glyph targets, animal "
                        "for --target animal]")
    g.add_argument("--study-finetune-steps", type=_ints, default=None, metavar="N,N,...",
                   help=f"the map's fine-tune lengths [default: {','.join(map(str, _S.finetune_steps))}]")
    g.add_argument("--study-images-per-class", type=_ints, default=None, metavar="N,N,...",
                   help=f"the map's target-set sizes [default: {','.join(map(str, _S.images_per_class))}]")
    g.add_argument("--ablation", type=_ablations, action="append", default=None, metavar="NAME[,NAME]",
                   help=f"comma list of {', '.join(ABLATIONS)} or 'all' (repeatable); alone (without --study) only "
                        "the ablations run. steps: metrics vs sampling steps for CFG and DoG; uncond-guide: a "
                        "null-label-only fine-tune of the source as DoG's guide at several of its checkpoints; "
                        "nine-grid: CFG | blend | DoG x w, same seeds, as a PNG")
    g.add_argument("--ablation-w", type=float, default=None,
                   help=f"guidance weight of the steps and uncond-guide ablations [default: {_S.ablation_w:g}]")
    g.add_argument("--sampling-steps", type=_ints, default=None, metavar="N,N,...",
                   help=f"steps ablation: sampler step counts [default: {','.join(map(str, _S.sampling_steps))}]")
    g.add_argument("--uncond-guide-steps", type=_ints, default=None, metavar="N,N,...",
                   help="uncond-guide ablation: the guide's checkpoints (training steps) "
                        f"[default: {','.join(map(str, _S.uncond_guide_steps))}]")
    g.add_argument("--grid-w", type=_floats, default=None, metavar="W,W,...",
                   help=f"nine-grid rows [default: {','.join(f'{w:g}' for w in _S.grid_w)}]")
    g.add_argument("--blend", type=float, default=None,
                   help=f"nine-grid middle column: the fine-tuned model's share of the blended unconditional branch "
                        f"(1: CFG's, 0: DoG's) [default: {_S.blend:g}]")


def wants_study(args: argparse.Namespace) -> bool:
    return bool(args.study or args.ablation)


def study_config_from_args(args: argparse.Namespace, base: DemoConfig) -> StudyConfig:
    """The StudyConfig of the parsed options; ``base`` is the demo config the other options built."""
    if args.out is None:  # a study of each variant in its own folder
        flow = getattr(args, "flow", False)
        base.out = ("runs/demo-study" + ("-full" if args.full else "") + ("-flow" if flow else "")
                    + ("-animal" if base.target == "animal" and not flow else ""))
    if args.w is None:
        base.w = [1.5]
    if args.dog_interval is None:
        base.dog_interval = None
    if base.also_without_dropout:  # --full's extra fine-tune: the study compares DoG with CFG, which needs dropout
        print("[demo] study: every cell fine-tunes with label dropout 0.1 only (DoG vs CFG needs the null label); "
              "--full's extra fine-tune without dropout applies to the plain demo, not to the study", flush=True)
        base.also_without_dropout = False
    ablations = list(dict.fromkeys(a for group in args.ablation or [] for a in group))
    values = {"base": base, "map": bool(args.study), "ablations": ablations}
    for name, field in (("study_targets", "targets"), ("study_finetune_steps", "finetune_steps"),
                        ("study_images_per_class", "images_per_class"),
                        ("ablation_w", "ablation_w"), ("sampling_steps", "sampling_steps"),
                        ("uncond_guide_steps", "uncond_guide_steps"), ("grid_w", "grid_w"), ("blend", "blend")):
        if getattr(args, name) is not None:
            values[field] = getattr(args, name)
    return StudyConfig(**values)
