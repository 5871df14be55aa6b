"""Named training presets (EDM2 style: one entry per protocol), as nested overrides of ``TrainConfig``.

``dit-xl2-imagenet-published`` is the recipe of the DoG forks / DogFit (docs/protocols.md section 3);
``sit-xl2-imagenet-published`` is the same recipe on SiT-XL/2 (flow matching, as the follow-up
work re-ran it). The others are ours: LoRA variants of both, and small presets that run on a CPU
(``cpu-tiny``, ``cpu-tiny-flow``; ``animal-source`` / ``animal-target`` for the embedded demo).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# The shipped eps source of the demo: `animal-source-flow` starts from its weights (see assets/README.md).
_EPS_SOURCE = str(Path(__file__).resolve().parents[2] / "assets" / "animal-source.safetensors")
# The shipped round-4 glyph source (G1, docs/regime-search.md), base of the glyph targets.
_GLYPH_SOURCE = str(Path(__file__).resolve().parents[2] / "assets" / "glyph-source.safetensors")


def _glyph_target(shapes: list[int], out: str) -> dict[str, Any]:
    """A round-4 G1 target: the given glyph shapes in blue (new labels), 50 images each, from the shipped glyph source."""
    return dict(init="base", base=_GLYPH_SOURCE, mode="full",
                data=dict(dataset="glyphs-blue", resolution=16, channels=3, classes=shapes, split="train",
                          images_per_class=50),
                label_dropout=0.1, lr=3e-4, batch_size=32, steps=1000, ema=dict(decay=0.999, warmup="linear"),
                grad_clip=1.0, log_every=50, ckpt_every=500, keep_last=2, sample_every=500,
                grid=dict(num=12, steps=25), out=out)


# Named presets (EDM2 style: one entry per protocol). Values are nested overrides of TrainConfig.
PRESETS: dict[str, dict[str, Any]] = {
    # The recipe of the forks / DogFit (docs/protocols.md): full fine-tune of DiT-XL/2-256 from ImageNet.
    # The base checkpoint and the target folder are the user's: --set base=DiT-XL-2-256x256.pt data.dataset=DIR
    "dit-xl2-imagenet-published": dict(
        init="base", mode="full", base_which="ema", vae="stabilityai/sd-vae-ft-ema", label_dropout=0.1,
        lr=1e-4, weight_decay=0.0, batch_size=32, steps=24000, ema=dict(decay=0.9999, warmup="none"),
        grad_clip=None, precision="fp32", tf32=True, log_every=100, ckpt_every=1000, keep_last=3,
        sample_every=2000, data=dict(resolution=256, channels=3, random_flip=True, latent_cache=True),
        grid=dict(num=8, sampler="ddpm", steps=50, scale=1.5), out="runs/dit-xl2-finetune"),
    # DogFit (AAAI 2026, docs/protocols.md): the same recipe, the DoG offset at w = 1.5 in the target from
    # step 12,000 of 24,000, no label dropout; sampled unguided (one network evaluation per step).
    "dit-xl2-imagenet-dogfit": dict(
        init="base", mode="full", base_which="ema", vae="stabilityai/sd-vae-ft-ema", label_dropout=0.0,
        single_pass=dict(enabled=True, w=1.5, start_step=12000), lr=1e-4, weight_decay=0.0, batch_size=32,
        steps=24000, ema=dict(decay=0.9999, warmup="none"), grad_clip=None, precision="fp32", tf32=True, log_every=100,
        ckpt_every=1000, keep_last=3, sample_every=2000,
        data=dict(resolution=256, channels=3, random_flip=True, latent_cache=True),
        grid=dict(num=8, sampler="ddpm", steps=50, scale=1.5, methods=["unguided", "dog"]), out="runs/dit-xl2-dogfit"),
    # DiffFit (Xie et al. 2023) on the published recipe: biases, per-block scale factors and the label table only,
    # at 10x the full fine-tune's learning rate (the paper's best is about 10x the pre-training rate, docs/protocols.md)
    "dit-xl2-imagenet-difffit": dict(
        init="base", mode="difffit", base_which="ema", vae="stabilityai/sd-vae-ft-ema", label_dropout=0.1,
        lr=1e-3, weight_decay=0.0, batch_size=32, steps=24000, ema=dict(decay=0.9999, warmup="none"), grad_clip=None,
        precision="fp32", tf32=True, log_every=100, ckpt_every=1000, keep_last=3, sample_every=2000,
        data=dict(resolution=256, channels=3, random_flip=True, latent_cache=True),
        grid=dict(num=8, sampler="ddpm", steps=50, scale=1.5), out="runs/dit-xl2-difffit"),
    # Ours (not published): the same recipe with LoRA; the guide is the base with the adapter off.
    "dit-xl2-imagenet-lora": dict(
        init="base", mode="lora", base_which="ema", vae="stabilityai/sd-vae-ft-ema", label_dropout=0.1,
        lora=dict(rank=32), lr=1e-4, weight_decay=0.0, batch_size=32, steps=24000,
        ema=dict(decay=0.9999, warmup="linear"), precision="auto", log_every=100, ckpt_every=1000,
        sample_every=2000, data=dict(resolution=256, channels=3, random_flip=True, latent_cache=True),
        grid=dict(num=8, sampler="ddpm", steps=50, scale=1.5), out="runs/dit-xl2-lora"),
    # The same recipe on SiT-XL/2 (flow matching; the follow-up work's SiT runs). The official
    # SiT-XL-2-256x256.pt is a raw state dict that cannot say it predicts velocity: the preset declares it.
    # Grids: SiT's SDE sampler at DiT's grid budget (50 network evaluations, as ddpm 50).
    "sit-xl2-imagenet-published": dict(
        init="base", mode="full", base_which="ema", base_prediction="velocity", vae="stabilityai/sd-vae-ft-ema",
        label_dropout=0.1, lr=1e-4, weight_decay=0.0, batch_size=32, steps=24000, ema=dict(decay=0.9999, warmup="none"),
        grad_clip=None, precision="fp32", tf32=True, log_every=100, ckpt_every=1000, keep_last=3,
        sample_every=2000, data=dict(resolution=256, channels=3, random_flip=True, latent_cache=True),
        grid=dict(num=8, sampler="sde-euler", steps=50, scale=1.5), out="runs/sit-xl2-finetune"),
    # Ours (not published): the SiT recipe with LoRA, as dit-xl2-imagenet-lora.
    "sit-xl2-imagenet-lora": dict(
        init="base", mode="lora", base_which="ema", base_prediction="velocity", vae="stabilityai/sd-vae-ft-ema",
        label_dropout=0.1, lora=dict(rank=32), lr=1e-4, weight_decay=0.0, batch_size=32, steps=24000,
        ema=dict(decay=0.9999, warmup="linear"), precision="auto", log_every=100, ckpt_every=1000,
        sample_every=2000, data=dict(resolution=256, channels=3, random_flip=True, latent_cache=True),
        grid=dict(num=8, sampler="sde-euler", steps=50, scale=1.5), out="runs/sit-xl2-lora"),
    # Seconds on a CPU: a tiny pixel-space DiT pre-trained on scikit-learn digits (8x8).
    "cpu-tiny": dict(
        init="scratch", model="T/2", model_overrides=dict(hidden_size=64, depth=2, num_heads=4),
        data=dict(dataset="digits", resolution=8), label_dropout=0.1, lr=1e-3, batch_size=32, steps=300,
        ema=dict(decay=0.99, warmup="linear"), device="cpu", log_every=10, ckpt_every=100, keep_last=2,
        sample_every=100, grid=dict(num=10, steps=10), out="runs/cpu-tiny"),
    # Minutes on a CPU: the same tiny network as cpu-tiny, trained with flow matching (SiT: velocity, no
    # learned-sigma half); grids use the auto sampler (ode-heun for a velocity model).
    "cpu-tiny-flow": dict(
        init="scratch", model="SiT-T/2", model_overrides=dict(hidden_size=64, depth=2, num_heads=4), learn_sigma=False,
        data=dict(dataset="digits", resolution=8), label_dropout=0.1, lr=2e-3, batch_size=32, steps=1000,
        ema=dict(decay=0.99, warmup="linear"), device="cpu", log_every=20, ckpt_every=250, keep_last=2,
        sample_every=250, grid=dict(num=10, sampler="auto", steps=10), out="runs/cpu-tiny-flow"),
    # Source model of the embedded demo: animal-mnist classes 0-5 (bear..elephant), 16x16 pixels, from scratch.
    "animal-source": dict(
        init="scratch", model="M/2", data=dict(dataset="animal-mnist", resolution=16, classes=[0, 1, 2, 3, 4, 5],
                                               split="train"),
        label_dropout=0.1, lr=3e-4, batch_size=64, steps=20000, ema=dict(decay=0.9995, warmup="linear"),
        grad_clip=1.0, device="auto", log_every=50, ckpt_every=1000, keep_last=3, sample_every=2000,
        grid=dict(num=12, steps=25), out="runs/animal-source"),
    # Flow-matching source of `dog demo --flow`: the same DiT-M/2 shape and data, trained with the flow-matching
    # (velocity) loss. To save CPU time it starts from the shipped eps source's weights, re-read as velocity
    # (base_reinterpret: the stored eps is overridden on purpose, recorded in the checkpoint's base entry): only
    # an initialisation (the time embedding sees SiT time in [0, 1] instead of DDPM steps, and the label table
    # is fresh), then trained as a SiT. `dog finetune --preset animal-source-flow` (init=base, not pretrain).
    "animal-source-flow": dict(
        init="base", base=_EPS_SOURCE, base_prediction="velocity", base_reinterpret=True, mode="full",
        data=dict(dataset="animal-mnist", resolution=16, classes=[0, 1, 2, 3, 4, 5], split="train"),
        label_dropout=0.1, lr=3e-4, batch_size=64, steps=20000, ema=dict(decay=0.9995, warmup="linear"),
        grad_clip=1.0, device="auto", log_every=50, ckpt_every=500, keep_last=4, sample_every=2000,
        grid=dict(num=12, sampler="auto", steps=25), out="runs/animal-source-flow"),
    # Round-4 source candidate (docs/regime-search.md): procedural RGB glyphs, shapes 0-7 in every hue, 16x16x3.
    "glyph-source": dict(
        init="scratch", model="M/2", data=dict(dataset="glyphs", resolution=16, channels=3,
                                               classes=[0, 1, 2, 3, 4, 5, 6, 7], split="train"),
        label_dropout=0.1, lr=3e-4, batch_size=64, steps=40000, ema=dict(decay=0.9995, warmup="linear"),
        grad_clip=1.0, device="auto", log_every=100, ckpt_every=1000, keep_last=3, sample_every=4000,
        grid=dict(num=16, steps=25), out="runs/glyph-source"),
    # Round-4 targets of G1, new labels, 50 blue images per class: covered = shapes the source holds (disk, square,
    # triangle, plus), outside = shapes it never saw (crescent, hourglass, tee, frame).
    "glyph-target-covered": _glyph_target([0, 1, 2, 3], "runs/glyph-target-covered"),
    "glyph-target-outside": _glyph_target([8, 9, 10, 11], "runs/glyph-target-outside"),
    # Target fine-tune of the demo: 4 new classes (giraffe, horse, sheep, zebra), 50 images each.
    "animal-target": dict(
        init="base", base="runs/animal-source", mode="full",
        data=dict(dataset="animal-mnist", resolution=16, classes=[6, 7, 8, 9], split="train", images_per_class=50),
        label_dropout=0.1, lr=1e-4, batch_size=32, steps=2000, ema=dict(decay=0.999, warmup="linear"),
        grad_clip=1.0, log_every=50, ckpt_every=500, keep_last=2, sample_every=500,
        grid=dict(num=12, steps=25), out="runs/animal-target"),
    "animal-target-lora": dict(
        init="base", base="runs/animal-source", mode="lora", lora=dict(rank=8),
        data=dict(dataset="animal-mnist", resolution=16, classes=[6, 7, 8, 9], split="train", images_per_class=50),
        label_dropout=0.1, lr=1e-3, batch_size=32, steps=2000, ema=dict(decay=0.999, warmup="linear"),
        grad_clip=1.0, log_every=50, ckpt_every=500, keep_last=2, sample_every=500,
        grid=dict(num=12, steps=25), out="runs/animal-target-lora"),
}


def describe_presets() -> str:
    """One line per preset, for ``--help``."""
    lines = []
    for name, p in PRESETS.items():
        data = p.get("data", {}).get("dataset", "DATA")
        lines.append(f"  {name}: init={p.get('init')}, mode={p.get('mode', 'full')}, data={data}, "
                     f"batch={p.get('batch_size')}, steps={p.get('steps')}, lr={p.get('lr')}")
    return "\n".join(lines)
