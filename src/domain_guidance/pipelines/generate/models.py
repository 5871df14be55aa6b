"""The models a sample set is drawn from, and the one place a guided denoiser is built from settings.

``Models`` bundles the fine-tuned Denoiser, its guide (a separate pre-trained network, or for a
LoRA fine-tune the same network with the adapter off), the decoder to images, and the identity of
the weights (sha256 + config) that together with ``GenerationSettings`` decides every pixel.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ...core.denoiser import Denoiser
from ...core.guidance import METHODS, GuidedDenoiser, build_guided_denoiser
from ...core.models.dit import FixedW
from ...core.models.config import DiTConfig
from ...core.precision import CompiledModule, maybe_compile, resolve_precision
from ...core.sampling import sample_from_seeds
from ...io.checkpoints import load_model, sha256_file
from .settings import GenerationSettings

Decoder = Callable[[torch.Tensor], torch.Tensor]  # model space (N, C, h, w) -> images in [-1, 1]
TRAIN_STATE = "train_state.pt"  # optimizer state beside a training checkpoint's weights: not part of them


@dataclass
class Models:
    """A fine-tuned Denoiser, its guide (or None), the decoder to images and what identifies the weights."""

    finetuned: Denoiser
    guide: Denoiser | None = None
    decode: Decoder | None = None
    identity: dict[str, Any] = field(default_factory=dict)  # sha256s and configs: part of the settings key
    sources: dict[str, Any] = field(default_factory=dict)  # paths as given: recorded, not part of the key
    autoguide: Denoiser | None = None  # autoguidance: a weaker model of the same classes (its own checkpoint)
    distilled: dict[str, Any] | None = None  # a single-pass (guidance-distilled) model's record: w, w_cond, ...

    @property
    def config(self) -> DiTConfig:
        return self.finetuned.config

    @property
    def device(self) -> torch.device:
        """Where the fine-tuned network's weights are (decides the default precision)."""
        return next(self.finetuned.net.parameters()).device

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's input space."""
        return (self.config.in_channels, *self.config.grid_hw_pixels)

    def unavailable(self, method: str) -> str | None:
        """Why ``method`` cannot be drawn from these models, or None when it can."""
        if method == "cfg" and self.finetuned.null_label is None:
            return ("CFG needs a fine-tuned model with a null label (trained with label dropout > 0); this one "
                    "has none: sample it unguided or with DoG")
        if method == "dog" and self.guide is None:
            return "DoG needs the pre-trained model as guide: pass --guide (a LoRA fine-tune brings its own)"
        if method == "dog" and self.guide is not None and self.guide.null_label is None:
            return "DoG needs a guide with a null label; this pre-trained model has none"
        if method == "autoguidance" and self.autoguide is None:
            return ("autoguidance needs its guide checkpoint: pass --autoguide (a weaker model of the same classes, "
                    "e.g. an earlier checkpoint of this fine-tune)")
        return None

    def methods(self) -> list[str]:
        """The methods these models can draw, of unguided / cfg / dog / autoguidance."""
        return [m for m in METHODS if self.unavailable(m) is None]

    def sampling_w(self, model_w: float | None) -> float | None:
        """The w fed to a w-conditioned single-pass model (None for any other model; refused there)."""
        if not self.config.w_embed:
            if model_w is not None:
                raise ValueError(f"model_w={model_w:g} applies to a w-conditioned single-pass model; this model has no w "
                                 "input (config w_embed is false): use --scale with a guidance method instead")
            return None
        if model_w is not None:
            return model_w
        recorded = (self.distilled or {}).get("w")
        if recorded is None:
            raise ValueError("this w-conditioned model records no default w: pass --model-w W")
        return float(recorded)


def build_denoiser(settings: GenerationSettings, models: Models) -> GuidedDenoiser:
    """The guided denoiser that ``settings`` describe, for ``models`` (the only place it is built)."""
    why = models.unavailable(settings.method)
    if why is not None:
        raise ValueError(f"method {settings.method!r}: {why}")
    if models.distilled is not None and settings.method != "unguided":
        warnings.warn(f"this model was trained with guidance distilled into it ({models.distilled.get('method', 'single-pass')}, "
                      f"w={models.distilled.get('w')}): it samples guided with --method unguided (one evaluation per "
                      f"step); --method {settings.method} guides it a second time, on top", UserWarning, stacklevel=2)
    guide = {"dog": models.guide, "autoguidance": models.autoguide}.get(settings.method)
    finetuned = models.finetuned
    if settings.channels is not None and not 1 <= settings.channels <= finetuned.data_channels:
        raise ValueError(f"channels: {settings.channels} guided channels asked for, but the model has "
                         f"{finetuned.data_channels}; expected 1..{finetuned.data_channels}")
    w = models.sampling_w(settings.model_w)
    if w is not None:  # a single-pass model with w as input: one evaluation per step at the chosen w
        finetuned = dataclasses.replace(finetuned, net=FixedW(finetuned.net, w))
    denoiser = build_guided_denoiser(settings.method, finetuned, guide, settings.scale, settings.channels,
                                 settings.interval)
    return _at_precision(denoiser, resolve_precision(settings.precision, models.device))


def _at_precision(denoiser: GuidedDenoiser, precision: str) -> GuidedDenoiser:
    """``denoiser`` whose branches run at ``precision``, as fresh Denoisers (evaluation counters at 0)."""
    copies: dict[int, Denoiser] = {}

    def fresh(d: Any) -> Any:
        if not isinstance(d, Denoiser):
            return d
        if id(d) not in copies:  # CFG: one Denoiser serves both branches and stays one
            copies[id(d)] = dataclasses.replace(d, precision=precision, evaluations=0)
        return copies[id(d)]

    return dataclasses.replace(denoiser, cond=fresh(denoiser.cond), uncond=fresh(denoiser.uncond))


@torch.no_grad()
def sample_images(settings: GenerationSettings, models: Models, denoiser: GuidedDenoiser | None = None,
                  device: torch.device | str = "cpu", decode: bool = True) -> torch.Tensor:
    """Samples of ``settings.seeds`` / ``settings.labels`` in [-1, 1] (decoded), (N, C, H, W), in memory."""
    s = settings.resolved(models.config.latent, models.device)
    denoiser = denoiser if denoiser is not None else build_denoiser(s, models)
    labels = torch.tensor(s.labels, dtype=torch.long)
    x = sample_from_seeds(denoiser, s.seeds, labels, models.shape, device=device, sampler=s.sampler, steps=s.steps,
                          clip_denoised=s.clip_denoised, **({"eta": s.eta} if s.sampler == "ddim" else {}),
                          **s.options)
    check_finite(x, s, "sampling")
    if decode and models.decode is not None:
        return check_finite(models.decode(x), s, "decoding")
    return x.clamp(-1, 1) if decode else x


def check_finite(x: torch.Tensor, settings: GenerationSettings, stage: str) -> torch.Tensor:
    """``x`` (N, ...) unchanged; a sample holding NaN or inf stops the run (it would become a black image)."""
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)  # (N,)
    if bool(bad.any()):
        seeds = [s for s, b in zip(settings.seeds, bad.tolist()) if b]
        raise ValueError(f"{stage} gave non-finite values (NaN or inf) for {len(seeds)} of {len(x)} samples (seeds "
                         f"{seeds[:5]}{'...' if len(seeds) > 5 else ''}) with sampler {settings.sampler} "
                         f"{settings.options or ''}, method {settings.method}, w {settings.scale:g}, precision "
                         f"{settings.precision}: the sampler diverged; nothing of this batch was written")
    return x


def evaluations_per_image(denoiser: GuidedDenoiser, n_images: int) -> dict[str, float] | None:
    """Per-sample network evaluations per image made through ``denoiser`` since it was built, by branch
    ("model": the fine-tuned network, both halves for CFG; "guide": DoG's or autoguidance's guide) and in total."""
    branches = {"model": denoiser.cond}
    if denoiser.uncond is not None and denoiser.uncond is not denoiser.cond:
        branches["guide"] = denoiser.uncond
    counts = {k: getattr(d, "evaluations", None) for k, d in branches.items()}
    if n_images < 1 or any(v is None for v in counts.values()):
        return None
    per_image = {k: round(v / n_images, 3) for k, v in counts.items()}
    per_image["total"] = round(sum(counts.values()) / n_images, 3)
    return per_image


def compile_models(models: Models, enabled: bool = True) -> tuple[Models, list[str]]:
    """``models`` with every network run through ``torch.compile`` (a network shared by two Denoisers, as a
    LoRA fine-tune and its adapter-off guide, stays one object), and the fallback notes (empty when it compiles)."""
    if not enabled:
        return models, []
    wrapped: dict[int, torch.nn.Module] = {}
    changes: dict[str, Denoiser] = {}
    for f in dataclasses.fields(models):
        d = getattr(models, f.name)
        if isinstance(d, Denoiser) and not isinstance(d.net, CompiledModule):
            net = wrapped.setdefault(id(d.net), maybe_compile(d.net, True))
            changes[f.name] = dataclasses.replace(d, net=net)
    notes = sorted({m.note for m in wrapped.values() if isinstance(m, CompiledModule) and m.note})
    return dataclasses.replace(models, **changes), notes


def settings_key(settings: GenerationSettings, models: Models) -> str:
    """sha256 of everything that decides the pixels of every image: settings (not the seed list) + weights."""
    record = {"settings": settings.resolved(models.config.latent, models.device).pixel_fields(),
              "models": models.identity}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


# ---- loading -----------------------------------------------------------------------------------

def weights_sha256(path: Path) -> str:
    """sha256 of a checkpoint file, or of a checkpoint directory's files except a training state."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != TRAIN_STATE):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _vae_identity(source: str, scale: float) -> dict[str, Any]:
    path = Path(source).expanduser()
    return {"vae": source if not path.exists() else None, "sha256": weights_sha256(path) if path.exists() else None,
            "latent_scale": scale}


PREDICTIONS = ("auto", "eps", "velocity")


def load_models(model: str, guide: str | None = None, *, which: str = "ema", vae: str | None = None,
                latent_scale: float | None = None, device: torch.device | str = "cpu",
                decoder: bool = True, prediction: str = "auto", autoguide: str | None = None) -> Models:
    """Load the fine-tuned checkpoint, its guide and (for latent models) the VAE decoder.

    A LoRA checkpoint brings its own guide: the same network with the adapter off, using the
    pre-trained config (its label table and null label); passing ``guide`` as well is an error.
    Otherwise ``guide`` is a separate checkpoint, always built from its own config.
    ``prediction`` ("eps" or "velocity") declares what both networks predict where a checkpoint
    cannot say (an official raw ``SiT-XL-2-256x256.pt``); "auto" keeps the stored or inferred one.
    A LoRA checkpoint's stored configs win: a declaration that contradicts them is an error.
    ``autoguide``: the guide of autoguidance, any checkpoint of the same classes (an earlier one of the
    same fine-tune, a smaller model), read with the same ``which``.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction: expected one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    declared: dict[str, Any] = {} if prediction == "auto" else {"prediction": prediction}
    ft = load_model(model, which=which, **declared)
    net = ft.net.to(device)
    finetuned = Denoiser(net, ft.config)
    identity: dict[str, Any] = {"model": {"sha256": weights_sha256(ft.path), "which": ft.which,
                                          "config": ft.config.to_dict()}}
    sources: dict[str, Any] = {"model": str(model), "model_path": str(ft.path), "which": ft.which}
    guide_den = None
    if ft.base_config is not None:  # LoRA: the guide is the base network with the adapter switched off
        if guide is not None:
            raise ValueError(f"{model} is a LoRA fine-tune whose guide is its own base network; do not pass --guide")
        guide_den = Denoiser(net, ft.base_config, adapter=False)
        identity["guide"] = {"adapter_off": True, "config": ft.base_config.to_dict()}
        sources["guide"] = str(ft.base_path)
    elif guide is not None:
        g = load_model(guide, which=which, **declared)
        guide_den = Denoiser(g.net.to(device), g.config)
        identity["guide"] = {"sha256": weights_sha256(g.path), "which": g.which, "config": g.config.to_dict()}
        sources.update(guide=str(guide), guide_path=str(g.path))
    auto_den = None
    if autoguide is not None:
        a = load_model(autoguide, which=which, **declared)
        auto_den = Denoiser(a.net.to(device), a.config)
        identity["autoguide"] = {"sha256": weights_sha256(a.path), "which": a.which, "config": a.config.to_dict()}
        sources.update(autoguide=str(autoguide), autoguide_path=str(a.path))
    decode = None
    if not ft.config.latent and (vae is not None or latent_scale is not None):
        raise ValueError(f"--vae / --latent-scale apply to latent models; {model} works in pixels, so they would "
                         "do nothing: drop them")
    if decoder and ft.config.latent:
        from ...io.vae import VAE  # diffusers is heavy: import only for latent models

        source = vae or ft.config.vae
        if source is None:
            raise ValueError("latent model without a VAE: pass --vae PATH_OR_ID")
        scale = latent_scale if latent_scale is not None else ft.config.latent_scale
        decode = VAE.from_pretrained(source, scale=scale, device=device).decode
        identity["decoder"] = _vae_identity(str(source), scale)
        sources["vae"] = str(source)
    distilled = ft.metadata.get("guidance_distilled") if isinstance(ft.metadata, dict) else None
    return Models(finetuned, guide_den, decode, identity, sources, auto_den, distilled)
