"""``run_toy``: both tracks of the 2-D study, metrics over seeds, figure, JSON and samples on disk."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...core.guidance import build_guided_denoiser
from .exact import ExactDenoiser
from .figure import guidance_arrows, render_figure
from .learned import MLPDenoiser, finetune, pretrain
from .metrics import METRICS, sample_metrics, summarize
from .sampling import sample_points
from .config import ToyConfig
from .scenario import Scenario, build_scenario
from ...io.atomic import write_bytes
from ...io.locks import folder_lock

METHODS = ("cfg", "dog")


def w_key(w: float) -> str:
    return f"{float(w):g}"


def sample_key(track: str, method: str, w: float, seed: int) -> str:
    """Name of one sample set in samples.npz. At w = 1 CFG and DoG are both the unguided sampler."""
    method = "unguided" if float(w) == 1.0 else method
    return f"{track}__{method}__w{w_key(w)}__seed{seed}"


def figure_weight(config: ToyConfig) -> float:
    """The w shown in the figure: ``figure_w`` when it is one of ``ws``, else the largest w."""
    return config.figure_w if config.figure_w in config.ws else max(config.ws)


def target_labels(config: ToyConfig) -> torch.Tensor:
    """(K * samples_per_class,) labels 0..K-1, each repeated samples_per_class times."""
    return torch.arange(config.num_target_classes).repeat_interleave(config.samples_per_class)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads (0: leave torch's setting)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Never a half-written file (shared io.atomic writer)."""
    write_bytes(path, data)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def track_denoisers(track: str, scenario: Scenario, config: ToyConfig, log: Callable[[str], None]):
    """Yields (seed, fine-tuned denoiser, pre-trained guide, training info) for every seed."""
    if track == "exact":
        ft = ExactDenoiser(scenario.target_classes, scenario.target, "exact target")
        guide = ExactDenoiser(scenario.source_classes, scenario.source, "exact source")
        for seed in config.seeds:
            yield seed, ft, guide, {}
        return
    t0 = time.perf_counter()
    pre_net, pre_losses = pretrain(scenario, config)
    log(f"  learned: pre-trained {config.pretrain_steps} steps in {time.perf_counter() - t0:.1f}s "
        f"(final loss {np.mean(pre_losses[-100:]):.4f})")
    guide = MLPDenoiser(pre_net, "pre-trained MLP")
    for seed in config.seeds:
        t0 = time.perf_counter()
        ft_net, ft_losses = finetune(pre_net, scenario, config, seed=10_000 + seed)
        log(f"  learned: fine-tuned (seed {seed}) {config.finetune_steps} steps in "
            f"{time.perf_counter() - t0:.1f}s (final loss {np.mean(ft_losses[-50:]):.4f})")
        info = {"pretrain_final_loss": float(np.mean(pre_losses[-100:])),
                "finetune_final_loss": float(np.mean(ft_losses[-50:]))}
        yield seed, MLPDenoiser(ft_net, f"fine-tuned MLP (seed {seed})"), guide, info


def run_track(track: str, scenario: Scenario, config: ToyConfig, samples: dict[str, np.ndarray],
              log: Callable[[str], None]) -> dict:
    """Sample every (method, w, seed) of one track; fill ``samples``; return metrics and figure inputs."""
    labels = target_labels(config)
    per_seed: dict[str, dict[str, list]] = {m: {w_key(w): [] for w in config.ws} for m in METHODS}
    training, figure_inputs = [], None
    computed: dict[str, dict[str, float]] = {}
    metric_kw = dict(near_radius=config.near_radius, sw_projections=config.sw_projections,
                     metric_seed=config.metric_seed)
    for seed, ft, guide, info in track_denoisers(track, scenario, config, log):
        training.append({"seed": seed, **info})
        for w in config.ws:
            for method in METHODS:
                key = sample_key(track, method, w, seed)
                if key not in samples:  # w = 1: one unguided run serves both methods
                    den = build_guided_denoiser(method, ft, guide, scale=w)
                    x = sample_points(den, labels, seed, sampler=config.sampler, steps=config.steps)
                    samples[key] = x.numpy()
                    computed[key] = sample_metrics(scenario, samples[key], labels, **metric_kw)
                per_seed[method][w_key(w)].append(computed[key])
        if figure_inputs is None:  # the first seed's models draw panel (d)
            figure_inputs = guidance_arrows(ft, guide, scenario, w=figure_weight(config), t=config.arrow_t,
                                            label=config.arrow_class, grid=config.arrow_grid)
    metrics = {m: {wk: summarize(v) for wk, v in per_w.items()} for m, per_w in per_seed.items()}
    return {"metrics": metrics, "training": training, "arrows": figure_inputs}


def format_table(results: dict) -> str:
    """Plain-text table of mean +- std over seeds per track, method and w."""
    lines = []
    for track, res in results["tracks"].items():
        lines.append(f"[{track}]  mean +- std over seeds {results['config']['seeds']}")
        lines.append(f"{'method':<7} {'w':>4}  " + "  ".join(f"{m:>17}" for m in METRICS))
        for method in METHODS:
            for wk, summ in res["metrics"][method].items():
                cells = "  ".join(f"{summ[m]['mean']:>8.4f} +-{summ[m]['std']:>7.4f}" for m in METRICS)
                lines.append(f"{method:<7} {wk:>4}  {cells}")
    return "\n".join(lines)


def run_toy(config: ToyConfig | None = None, out_dir: str | Path | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Run the study; with ``out_dir``, write config.json, metrics.json, samples.npz and toy_<track>.png.

    Returns the results dict (the content of metrics.json, plus "samples" and "labels" arrays).
    """
    config = config or ToyConfig()
    if out_dir is not None:
        with folder_lock(out_dir):  # a second toy run into the same folder is refused while this one runs
            return _run_toy(config, out_dir, log)
    return _run_toy(config, out_dir, log)


def _run_toy(config: ToyConfig, out_dir: str | Path | None, log: Callable[[str], None]) -> dict:
    t_start = time.perf_counter()
    results: dict = {"config": config.to_dict(), "tracks": {}, "timing_s": {},
                     "notes": {"w=1": "CFG and DoG are identical at w = 1 (unguided); sampled once",
                               "seeds": "sampling seeds; on the learned track also the fine-tuning seed "
                                        "(the pre-trained model is trained once, train_seed); every "
                                        "method and w of a seed uses the same per-sample noise",
                               "std": "sample standard deviation over seeds (ddof = 1)"}}
    samples: dict[str, np.ndarray] = {}
    with torch_threads(config.threads):
        scenario = build_scenario(config)
        labels = target_labels(config).numpy()
        pngs = {}
        for track in config.tracks:
            t0 = time.perf_counter()
            log(f"toy: {track} track ({len(config.seeds)} seeds x {len(config.ws)} w, "
                f"{config.sampler} {config.steps} steps, {len(labels)} samples each)")
            res = run_track(track, scenario, config, samples, log)
            arrows = res.pop("arrows")
            results["tracks"][track] = res
            fw = figure_weight(config)
            seed0 = config.seeds[0]
            m = res["metrics"]
            ood = {meth: m[meth][w_key(fw)]["ood_rate"]["per_seed"][0] for meth in METHODS}
            if out_dir is not None:
                pngs[track] = render_figure(
                    scenario, track=track, w=fw, cfg_x=samples[sample_key(track, "cfg", fw, seed0)],
                    dog_x=samples[sample_key(track, "dog", fw, seed0)], labels=labels, arrows=arrows, ood=ood,
                    arrow_t=config.arrow_t, arrow_class=config.arrow_class)
            res["figure"] = {"file": f"toy_{track}.png", "w": fw, "seed": seed0, "arrow_t": config.arrow_t,
                             "arrow_class": config.arrow_class}
            results["timing_s"][track] = round(time.perf_counter() - t0, 2)
        results["timing_s"]["total"] = round(time.perf_counter() - t_start, 2)
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_bytes(out / "config.json", (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        atomic_write_bytes(out / "samples.npz", _npz_bytes({"labels": labels, **samples}))
        for track, png in pngs.items():
            atomic_write_bytes(out / f"toy_{track}.png", png)
        atomic_write_bytes(out / "metrics.json", (json.dumps(results, indent=2) + "\n").encode())
    return {**results, "samples": samples, "labels": labels}
