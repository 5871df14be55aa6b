"""Memory plan of the published fine-tune and of DoG sampling, from activation memory measured on the CPU.

Method: the extra peak resident memory of one training step (forward, loss, backward; gradients
allocated beforehand) and of one sampling forward / VAE decode is measured at batch 1 and 2 on the
full-size networks, and extrapolated linearly: ``extra(b) = a + b * per_sample``. Assumptions (stated
in every plan): GPU activations take what the CPU's do (same dtype fp32, same attention kernel
family: PyTorch's fused scaled-dot-product attention, no 256 x 256 score matrix kept); weights,
gradients, AdamW (2 moments) and EMA are counted from the parameter counts, 4 bytes each; a card of
G GiB leaves ``G - RESERVE_GIB`` to tensors (CUDA context, cuBLAS workspace, allocator slack).
The probes run without ``FlopCounterMode``: under it, gradient checkpointing saves almost nothing (the
counter keeps the recomputed blocks' tensors alive; measured: 0.11 vs 0.056 GiB at batch 1, 4 blocks).
"""
from __future__ import annotations

from typing import Any

import torch

from ...core.models import dit_config
from ...io.distributed import DistInfo
from .measure import peak_gib, reset_peak, rss_gib, trim

CARDS_GIB = (24, 40, 80)
RESERVE_GIB = 1.5
BATCHES = (1, 2)
GIB = 1024 ** 3
LORA_RANK = 32  # the LoRA presets' rank


def build_cache(tcfg: Any, model: str) -> dict[str, Any]:
    """Build the fine-tune's latent cache with the training pipeline's own ``prepare_data`` (``train`` then
    reuses it); returns its size per image and what it would weigh for Food-101's 101,000 images."""
    from pathlib import Path

    from ..training.data import prepare_data

    base = dit_config(model)
    data = prepare_data(tcfg, base, DistInfo(device=torch.device("cpu")), Path(tcfg.out))
    ds = data.dataset
    tensors = [getattr(ds, n) for n in ("mean", "std", "mean_flip", "std_flip") if hasattr(ds, n)]
    per_image = sum(t[0].numel() * t.element_size() for t in tensors)
    info = {"images": len(ds), "bytes_per_image": per_image, "food101_all_gib": per_image * 101_000 / GIB,
            "latent_shape": list(data.shape)}
    del data, ds, tensors
    trim()
    return info


def _extra_peak(fn: Any) -> float:
    """GiB of resident memory ``fn()`` adds at its peak over what was resident before it."""
    trim()
    reset_peak()
    before = rss_gib()
    fn()
    extra = peak_gib(True) - before
    trim()
    return extra


def _train_step(net: Any, flow: bool, b: int) -> None:
    from ...core.diffusion import create_diffusion
    from ...core.flow import flow_matching_losses, flow_training_inputs

    gen = torch.Generator().manual_seed(b)
    x0, noise = torch.randn(b, 4, 32, 32, generator=gen), torch.randn(b, 4, 32, 32, generator=gen)  # (b, 4, 32, 32)
    y = torch.zeros(b, dtype=torch.long)
    if flow:
        t = torch.rand(b, generator=gen)
        out = net(flow_training_inputs(x0, noise, t), t, y)
        loss = flow_matching_losses(out.float(), x0, noise)["loss"].mean()
    else:
        diffusion = create_diffusion("", learn_sigma=True)
        t = torch.randint(0, diffusion.num_timesteps, (b,), generator=gen)
        x_t = diffusion.q_sample(x0, t, noise)
        loss = diffusion.training_losses(net(x_t, t, y).float(), x0, x_t, t, noise)["loss"].mean()
    loss.backward()


def _probe(fn: Any) -> dict[str, float]:
    """``fn(b)``'s extra peak at each of BATCHES, after one unmeasured call (oneDNN's first-call caches)."""
    _extra_peak(lambda: fn(BATCHES[0]))
    return _fit({b: _extra_peak(lambda b=b: fn(b)) for b in BATCHES})


def _fit(points: dict[int, float]) -> dict[str, float]:
    (b1, e1), (b2, e2) = sorted(points.items())[:2]
    per = (e2 - e1) / (b2 - b1)
    return {"intercept_gib": e1 - b1 * per, "per_sample_gib": per, **{f"extra_gib_b{b}": e for b, e in points.items()}}


def _train_probes(net: Any, flow: bool, dit: Any) -> dict[str, Any]:
    net.train()
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # allocated before: the probes measure activations, not gradients
    out = {}
    for ckpt in (False, True):
        dit.gradient_checkpointing = ckpt
        out["checkpointing" if ckpt else "plain"] = _probe(lambda b: _train_step(net, flow, b))
    for p in net.parameters():
        p.grad = None
    return out


def probe_family(weights: dict[str, str], family: str) -> dict[str, Any]:
    """Activation probes of one family's full-size networks (base checkpoint and VAE from ``weights``)."""
    from ...core.models.adapters import add_lora
    from ...io.checkpoints import load_model, retarget
    from ...io.vae import VAE

    flow = family == "sit"
    loaded = load_model(weights["base"], **({"prediction": "velocity"} if flow else {}))
    base = loaded.net
    params = sum(p.numel() for p in base.parameters())
    measured: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)

    def forward(net: Any, b: int) -> None:
        t = torch.full((b,), 0.5 if flow else 500)  # (b,) SiT time / ADM step
        with torch.no_grad():
            net(torch.randn(b, 4, 32, 32, generator=gen), t, torch.zeros(b, dtype=torch.long))

    measured["sample_forward"] = _probe(lambda b: forward(base, b))
    net, _ = retarget(base, loaded.config, num_classes=2)
    measured["train_full"] = _train_probes(net, flow, net)
    del net
    trim()
    target = loaded.config.replace(num_classes=2)
    lora = add_lora(base, target, rank=LORA_RANK)
    adapter = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    measured["train_lora"] = _train_probes(lora, flow, base)
    lora = base = loaded = None  # freed before the VAE probe
    trim()
    vae = VAE.from_pretrained(weights["vae"])
    vae_params = sum(p.numel() for p in vae.model.parameters())
    lat = torch.randn(max(BATCHES), 4, 32, 32, generator=gen)  # (2, 4, 32, 32) scaled latents
    measured["vae_decode"] = _probe(lambda b: vae.decode(lat[:b]))
    return plan({"params": params, "adapter_params": adapter, "vae_params": vae_params}, measured, family)


def _max_batch(budget: float, static: float, fits: list[tuple[dict[str, float], int | None]]) -> int:
    """The largest b with static + a + min(b, cap) * per_sample <= budget for every (fit, cap) (0: none fits)."""
    best = 0
    for b in range(1, 4097):
        need = max(f["intercept_gib"] + min(b, cap or b) * max(f["per_sample_gib"], 0.0) for f, cap in fits)
        if static + need > budget:
            break
        best = b
    return best


def plan(counts: dict[str, int], measured: dict[str, Any], family: str) -> dict[str, Any]:
    """The largest per-GPU batch of each workload on each card, with what it assumes."""
    w, adapter, vae = (4 * counts[k] / GIB for k in ("params", "adapter_params", "vae_params"))
    decode_cap = 32  # io.vae.VAE.decode's default batch
    workloads = {
        "fine-tune full (published: AdamW, EMA, frozen guide copy for the DoG grids)":
            (6 * w + vae, [(measured["train_full"]["plain"], None)]),
        "fine-tune full + gradient checkpointing": (6 * w + vae, [(measured["train_full"]["checkpointing"], None)]),
        "fine-tune full, no grids (sample_every=0: no guide copy)":
            (5 * w + vae, [(measured["train_full"]["plain"], None)]),
        "fine-tune LoRA r32": (w + 5 * adapter + vae, [(measured["train_lora"]["plain"], None)]),
        "fine-tune LoRA r32 + gradient checkpointing":
            (w + 5 * adapter + vae, [(measured["train_lora"]["checkpointing"], None)]),
        "DoG sampling, full fine-tune + separate guide (+ VAE decode)":
            (2 * w + vae, [(measured["sample_forward"], None), (measured["vae_decode"], decode_cap)]),
        "DoG sampling, LoRA, adapter-off guide (+ VAE decode)":
            (w + adapter + vae, [(measured["sample_forward"], None), (measured["vae_decode"], decode_cap)]),
    }
    rows = [{"workload": name, "static_gib": static,
             **{f"max_batch_{g}gib": _max_batch(g - RESERVE_GIB, static, fits) for g in CARDS_GIB}}
            for name, (static, fits) in workloads.items()]
    return {"family": family, "counts": counts, "measured": measured, "rows": rows, "reserve_gib": RESERVE_GIB,
            "assumptions": __doc__.split("Method: ", 1)[1].strip()}


def plan_markdown(p: dict[str, Any]) -> str:
    """The plan as Markdown: per-sample activations, then the largest batch per card."""
    m = p["measured"]
    per = {"training step, full": m["train_full"]["plain"], "training step, full, checkpointing":
           m["train_full"]["checkpointing"], "training step, LoRA": m["train_lora"]["plain"],
           "training step, LoRA, checkpointing": m["train_lora"]["checkpointing"],
           "sampling forward (one network call)": m["sample_forward"], "VAE decode 256 px": m["vae_decode"]}
    lines = ["Measured activation memory (dry run, random weights; CPU, fp32; batch 1 and 2, linear):", "",
             "| what | GiB at b=1 | GiB at b=2 | per sample GiB | intercept GiB |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {f['extra_gib_b1']:.3f} | {f['extra_gib_b2']:.3f} | {f['per_sample_gib']:.3f} | "
              f"{f['intercept_gib']:.3f} |" for k, f in per.items()]
    cards = " | ".join(f"{g} GiB" for g in CARDS_GIB)
    lines += ["", f"Largest batch per GPU (a card of G GiB leaves G - {p['reserve_gib']} GiB; 0 = does not fit):", "",
              f"| workload | weights + optimizer GiB | {cards} |", "|---|---|" + "---|" * len(CARDS_GIB)]
    for r in p["rows"]:
        lines.append(f"| {r['workload']} | {r['static_gib']:.1f} | "
                     + " | ".join(str(r[f"max_batch_{g}gib"]) for g in CARDS_GIB) + " |")
    return "\n".join(lines) + "\n"
