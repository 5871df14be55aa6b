"""The protocol section of the demo's report (what was run, on which data, scored how) and its KID detail."""
from __future__ import annotations

from typing import Any

from .domains import get_target
from .report_format import label, value


def title(results: dict[str, Any]) -> str:
    """The report's title: which benchmark it is."""
    target = results["config"].get("target", "animal")
    return {"animal": "animal-mnist transfer"}.get(target, f"glyph transfer, {target} target")


def protocol(results: dict[str, Any]) -> list[str]:
    cfg = results["config"]
    spec = get_target(cfg.get("target", "animal"))  # results from before targets existed are the animal demo's
    n_ref = results["reference"]["images"]
    interval = cfg.get("dog_interval")
    unit = "SiT time (0 = noise)" if cfg.get("prediction") == "velocity" else "DDPM timesteps"
    fid_line = (f"- Reference: {n_ref} held-out target test images. FID: real FID-Inception weights (pool3 features; "
                "exact Frechet distance); KID: unbiased polynomial-kernel MMD² on the same features, mean over "
                f"{cfg['kid_subsets']} random subsets of min(N, reference) features (± its std over subsets in the "
                "KID detail table)." if cfg["fid"] else
                f"- Reference: {n_ref} held-out target test images. FID / KID (Inception): not computed (--no-fid).")
    return [
        "## Protocol", "",
        f"- Benchmark: {spec.description}.",
        f"- Source model: `{results['source']['checkpoint']}` (label dropout 0.1"
        + (f", pre-trained here for {results['source']['steps']} steps" if results["source"]["trained_now"] else "")
        + ").",
        f"- Target domain: classes {cfg['target_classes']}, {cfg['images_per_class']} training images per class; "
        f"full fine-tune for {cfg['finetune_steps']} steps (batch {cfg['finetune_batch']}, lr "
        f"{cfg['finetune_lr'] if cfg.get('finetune_lr') is not None else 'of the preset'}).",
        f"- Sampling: {cfg['sampler'].upper()} with {cfg['steps']} steps, N = {cfg['samples']} samples per setting "
        f"(class-balanced), w in {cfg['w']}"
        + (f", DoG also guided only for {unit} t in [{interval[0]:g}, {interval[1]:g}] (the high-noise "
           "part; outside it the fine-tuned model alone)" if interval else "")
        + f", seed replicates {cfg['seeds']} (replicate r uses seeds r*100000 + 0..N-1; every method sees the "
          "same seeds).",
        fid_line,
        f"- Real floor (and ceiling for the judge's rates): per seed replicate, {cfg['samples']} real target images "
        "with the samples' class counts, from the part of the target classes' train split that the judge never trains "
        "on (a content-hashed floor pool), minus the fine-tuning images (and minus any exact duplicate of a "
        "fine-tuning or reference image); the replicates' sets are disjoint. They are scored "
        "exactly like the samples, so a method's number can only be read against this row at the same N.",
        f"- Classifier judge: small CNN on all {spec.judge_classes} classes of {spec.judge_dataset}, trained on its train "
        f"split outside the floor pool (test accuracy {results['classifier']['test_accuracy']:.3f}); "
        "in-domain rate = share classified into a target class; class match = share classified as the requested "
        "(real: true) class; FD / KID (classifier) = Frechet distance / KID of its 128-d penultimate features vs the "
        "reference."
        + (" In-domain rate, exact: share of samples whose shape's hue lies in the target's band (measured from the "
           "pixels, no judge)." if spec.exact_domain is not None else ""),
        "- Intra-class metrics (intra-FID, Miyato & Koyama 2018): for each target class k, the samples asked for k "
        "(real floor: the images of class k) against the reference images of class k, with the same estimator as the "
        "marginal metric; the mean over classes. A marginal metric pools all samples and never sees the requested label, "
        "so a sample of the wrong class costs it nothing; the intra-class one counts it. Per class there are only N/K "
        "samples, so these distances are larger (biased up) than the marginal ones: read them against their floor.",
        f"- Table cells: mean ± std (ddof 1) over the seed replicates. Resolved: {results['resolve_rule']} "
        "(analysis.resolved). Comparison rows give the relative change of the first setting against the second.",
        f"- Stage wall times (s): {results['stage_seconds']}; CPU seconds of this process: "
        f"{results.get('stage_cpu_seconds', 'n/a')} ({results.get('torch_threads', '?')} torch threads); "
        f"work: {results.get('workload', {})}.", ""]


def kid_detail(summary: list[dict], ft: str) -> list[str]:
    rows = [r for r in summary if r["finetune"] in (ft, None) and ("kid_subset_std" in r
                                                                  or "kid_classifier_subset_std" in r)]
    if not rows:
        return []
    lines = ["KID detail: std over KID's random subsets (mean over replicates), a spread of the estimator "
             "within one set:", "", "| Setting | KID×10³ (Inception) subset std | KID (classifier) subset std |",
             "|---|---|---|"]
    for r in rows:
        a = value("kid", r["kid_subset_std"]) if "kid_subset_std" in r else "n/a"
        b = value("kid_classifier", r["kid_classifier_subset_std"]) if "kid_classifier_subset_std" in r else "n/a"
        lines.append(f"| {label(r)} | {a} | {b} |")
    return lines + [""]
