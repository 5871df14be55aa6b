"""Training configuration: dataclasses with defaults, named presets, TOML/YAML files, ``--set`` overrides.

Resolution order (later wins): dataclass defaults < preset < config file < typed overrides (code) <
``--set key=value``. The dataclasses share the one config idiom (``io.config_files.ConfigMixin``);
unlike the other configs a TrainConfig is built in layers, so it is validated once resolved.
A config file may name its own ``preset``. Nested sections are addressed with dots
(``--set data.dataset=digits``, ``--set lora.rank=8``, ``--set ema.warmup=linear``).
The resolved config is saved as ``config.json`` in the run directory.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from ...core.models.adapters import DEFAULT_LORA_TARGETS
from ...io.config_files import ConfigMixin, read_config_file
from .overrides import apply_overrides, parse_value, set_key
from .presets import PRESETS

__all__ = ["DataConfig", "EmaConfig", "GridConfig", "LoraSettings", "SinglePassConfig", "TrainConfig", "PRESETS",
           "apply_overrides", "parse_value", "resolve_config", "set_key"]


@dataclass
class DataConfig(ConfigMixin):
    """What to train on: a built-in name (``digits``, ``animal-mnist``) or an image folder."""

    dataset: str | None = None  # required: a built-in name or a folder path
    resolution: int | None = None  # pixels; None: the model's (fine-tune) or the dataset's native size
    channels: int | None = None  # 1 or 3; None: what the model / VAE expects
    classes: list[Any] | None = None  # class ids or names kept, relabelled 0..K-1 in this order
    images_per_class: int | None = None
    split: str = "all"  # all | train | test (built-in, deterministic per-class split)
    test_fraction: float = 0.2
    split_seed: int = 0
    subset_seed: int = 0  # which images_per_class images are kept
    random_flip: bool | None = None  # None: the dataset's default (digits: off, others: on)
    layout: str = "auto"  # image folders: auto | classes | flat (unlabelled)
    max_bad_fraction: float = 0.01  # image folders: more unreadable files than this is an error
    latent_cache: bool = True  # latent models: encode once, sample the cached posterior per step
    cache_path: str | None = None  # default <out>/latents.safetensors
    num_workers: int = 0  # DataLoader workers (items depend only on their seeded key)


@dataclass
class LoraSettings(ConfigMixin):
    """LoRA mode: rank/alpha of peft's LoRA on the DiT block linears (+ a separate target label table)."""

    rank: int = 32
    alpha: float | None = None  # None: alpha = rank (scale 1)
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    dropout: float = 0.0  # > 0 uses the global RNG (reseeded per step and rank): not process-count independent


@dataclass
class SinglePassConfig(ConfigMixin):
    """Single-pass Domain Guidance (DogFit): the DoG offset is baked into the target; sampling is unguided.

    target = eps + (w - 1) * sg(eps_ema(x_t, c) - eps_pre(x_t, null_pre)) (velocities for flow models).
    """

    enabled: bool = False
    w: float = 1.5  # the distilled guidance weight (w_cond: the default w recorded for sampling)
    start_step: int = 0  # late start: no offset up to this optimizer step (DogFit: 12000 of 24000)
    cutoff: float | None = None  # offset only on this share of the noise range, from cutoff_side (DogFit ~0.4-0.6)
    # low-noise: noise level (1 = noise) < cutoff; high-noise: 1 - noise level < cutoff; release: DogFit's scripts
    # (DiT low-noise, SiT high-noise: both compare their own time variable with mg_high); docs/protocols.md
    cutoff_side: str = "low-noise"
    w_cond: bool = False  # w as a model input, drawn per sample (w_dist), one model for every w
    w_dist: str = "exponential"  # exponential: w = 1 + z, z ~ Exp(w_rate), clipped at w_max; uniform: [w_min, w_max]
    w_rate: float = 1.0
    w_rate_from: list[float] | None = None  # [U, p]: w_rate = -ln(1 - p) / (U - 1), DogFit's rule (P(w < U) = p)
    w_min: float = 1.0  # uniform only: the lower end
    w_max: float | None = None  # exponential: clip drawn w (None: no clip); uniform: the upper end (DogFit: 3, 5, 7)


@dataclass
class EmaConfig(ConfigMixin):
    """EMA of the trained weights; ``warmup`` (k-diffusion / EDM2 style) shortens the memory early on.

    none: decay; linear: min(decay, (1 + step) / (10 + step));
    power: min(decay, 1 - (1 + step / inv_gamma) ** -power).
    """

    decay: float = 0.9999
    warmup: str = "none"
    power: float = 2.0 / 3.0
    inv_gamma: float = 1.0


@dataclass
class GridConfig(ConfigMixin):
    """Fixed-seed sample grid every ``sample_every`` steps: one row per method, same seeds."""

    num: int = 8  # samples per row (labels cycle over the target classes)
    seed: int = 0  # seeds are seed .. seed + num - 1
    sampler: str = "auto"  # auto: ddim for eps (DiT) models, ode-heun for velocity (SiT) models
    steps: int = 25
    scale: float = 1.5
    methods: list[str] = field(default_factory=lambda: ["unguided", "cfg", "dog"])  # those possible are drawn
    upscale: int = 0  # 0: enlarge small images to >= 64 px


@dataclass
class TrainConfig(ConfigMixin):
    """One training run: fine-tuning from ``base`` (``init="base"``) or pre-training (``init="scratch"``)."""

    preset: str | None = None
    init: str = "base"  # base: start from the checkpoint `base`; scratch: a new DiT of size `model`
    base: str | None = None  # pre-trained checkpoint (official .pt, ours, diffusers) or a run directory
    base_which: str = "ema"  # weights of a training checkpoint used as base: ema | model
    base_prediction: str = "auto"  # what the base predicts: auto (stored/inferred) | eps | velocity (raw SiT .pt)
    base_reinterpret: bool = False  # true: base_prediction replaces the base's stored one (an initialisation only)
    model: str = "T/2"  # scratch: size name ("XL/2", "S/2", "T/2", ...)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # scratch: e.g. {hidden_size: 32, depth: 1}
    learn_sigma: bool = True  # scratch only; a base keeps its own
    vae: str | None = None  # latent models: VAE dir/hub id (fine-tune default: the base's; scratch: None = pixels)
    data: DataConfig = field(default_factory=DataConfig)
    mode: str = "full"  # full | lora | difffit (biases + per-block scales + label table; the guide is the base)
    lora: LoraSettings = field(default_factory=LoraSettings)
    single_pass: SinglePassConfig = field(default_factory=SinglePassConfig)
    label_dropout: float = 0.1  # 0: conditional-only (unguided or DoG); > 0 also allows CFG
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    batch_size: int = 32  # GLOBAL batch; each of N processes takes batch_size / N
    steps: int = 24000
    ema: EmaConfig = field(default_factory=EmaConfig)
    grad_clip: float | None = None  # max global grad norm; None: no clipping (norm still logged)
    precision: str = "fp32"  # fp32 | bf16 (autocast on the training device, CPU too) | auto (bf16 on CUDA only)
    tf32: bool = True  # allow TF32 matmuls on CUDA (the published recipe's fp32/TF32)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the network (eager, with a logged note, where it cannot compile)
    log_every: int = 100
    sample_every: int = 0  # 0: no grids (a final grid is still drawn when > 0)
    ckpt_every: int = 1000
    keep_last: int = 3
    grid: GridConfig = field(default_factory=GridConfig)
    seed: int = 0
    out: str = "runs/finetune"
    device: str = "auto"  # auto | cpu | cuda
    dist_timeout_s: float = 600.0  # process-group timeout: a dead peer fails the run instead of hanging it
    progress: bool = True
    tensorboard: bool = True
    debug_nan_at_step: int | None = None  # testing hook: the loss of this step becomes NaN
    debug_kill_at_step: int | None = None  # testing hook: SIGKILL this process after this step's update

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "dict") -> "TrainConfig":  # type: ignore[override]
        """Defaults overridden by a nested dict (each key checked and coerced); validate once resolved."""
        cfg = cls()
        apply_overrides(cfg, d, source=source)
        return cfg

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field and what was expected."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.init in ("base", "scratch"), f"init must be 'base' or 'scratch', got {self.init!r}")
        need(self.init == "scratch" or bool(self.base),
             "init='base' needs a pre-trained checkpoint: --set base=PATH (or init=scratch to pre-train)")
        need(self.mode in ("full", "lora", "difffit"), f"mode must be 'full', 'lora' or 'difffit', got {self.mode!r}")
        need(not (self.mode in ("lora", "difffit") and self.init == "scratch"),
             f"mode={self.mode!r} needs a pre-trained base (init='base')")
        need(not (self.mode == "difffit" and self.gradient_checkpointing),
             "mode='difffit' does not combine with gradient_checkpointing=true; turn one off")
        self._validate_single_pass()
        need(self.base_which in ("ema", "model"), f"base_which must be 'ema' or 'model', got {self.base_which!r}")
        need(self.base_prediction in ("auto", "eps", "velocity"),
             f"base_prediction must be auto, eps or velocity, got {self.base_prediction!r}")
        need(self.init == "base" or self.base_prediction == "auto",
             f"base_prediction={self.base_prediction!r} applies to a base checkpoint, but init='scratch'; a new "
             "model predicts velocity when named SiT-... (model=SiT-S/2) or with model_overrides.prediction")
        need(not self.base_reinterpret or self.base_prediction != "auto",
             "base_reinterpret=true re-reads the base as base_prediction, but base_prediction is 'auto'; "
             "set base_prediction=eps or velocity, or drop base_reinterpret")
        need(0.0 <= self.label_dropout <= 1.0, f"label_dropout must be in [0, 1] (1: null label only), got {self.label_dropout}")
        need(self.batch_size > 0 and self.steps > 0,
             f"batch_size and steps must be > 0, got {self.batch_size}, {self.steps}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.precision in ("fp32", "bf16", "auto"), f"precision must be fp32, bf16 or auto, got {self.precision!r}")
        need(0.0 <= self.ema.decay < 1.0, f"ema.decay must be in [0, 1), got {self.ema.decay}")
        need(self.ema.warmup in ("none", "linear", "power"),
             f"ema.warmup must be none, linear or power, got {self.ema.warmup!r}")
        need(self.lora.rank > 0, f"lora.rank must be > 0, got {self.lora.rank}")
        need(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or null, got {self.grad_clip}")
        need(self.log_every > 0 and self.ckpt_every > 0 and self.keep_last > 0,
             "log_every, ckpt_every and keep_last must be > 0")
        need(self.sample_every >= 0, f"sample_every must be >= 0, got {self.sample_every}")
        need(len(self.adam_betas) == 2, f"adam_betas must be two numbers, got {self.adam_betas}")
        need(bool(self.data.dataset), "data.dataset is required: a built-in name (digits, animal-mnist) or a folder "
             "of class sub-folders (--set data.dataset=PATH)")
        need(self.data.split in ("all", "train", "test"), f"data.split must be all, train or test, got {self.data.split!r}")
        return self

    def _validate_single_pass(self) -> None:
        sp = self.single_pass
        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
        if not sp.enabled:
            if sp.w_cond:
                raise ValueError("single_pass.w_cond=true needs single_pass.enabled=true")
            return
        if self.init != "base":
            raise ValueError("single_pass.enabled needs a pre-trained base (init='base'): its eps_pre is the guide")
        if not finite(sp.w):
            raise ValueError(f"single_pass.w must be a finite number, got {sp.w}")
        if sp.start_step < 0:
            raise ValueError(f"single_pass.start_step must be >= 0, got {sp.start_step}")
        if sp.start_step >= self.steps:
            raise ValueError(f"single_pass.start_step={sp.start_step} is not before steps={self.steps}: the offset "
                             "would never apply")
        if sp.cutoff is not None and not (finite(sp.cutoff) and 0.0 < sp.cutoff <= 1.0):
            raise ValueError(f"single_pass.cutoff must be in (0, 1] (normalised noise level, 1 = noise) or null, "
                             f"got {sp.cutoff}")
        if not (finite(sp.w_rate) and sp.w_rate > 0):
            raise ValueError(f"single_pass.w_rate must be > 0, got {sp.w_rate}")
        if sp.cutoff_side not in ("low-noise", "high-noise", "release"):
            raise ValueError(f"single_pass.cutoff_side must be low-noise, high-noise or release, got {sp.cutoff_side!r}")
        if sp.w_dist not in ("exponential", "uniform"):
            raise ValueError(f"single_pass.w_dist must be exponential or uniform, got {sp.w_dist!r}")
        if sp.w_dist == "uniform" and not (sp.w_max is not None and finite(sp.w_min) and sp.w_min < sp.w_max):
            raise ValueError(f"single_pass.w_dist=uniform draws w in [w_min, w_max]: needs a finite w_min < w_max, "
                             f"got w_min={sp.w_min}, w_max={sp.w_max}")
        if sp.w_rate_from is not None and not (len(sp.w_rate_from) == 2 and finite(sp.w_rate_from[0])
                                               and sp.w_rate_from[0] > 1 and 0 < sp.w_rate_from[1] < 1):
            raise ValueError(f"single_pass.w_rate_from must be [U, p] with U > 1 and 0 < p < 1 (rate -ln(1 - p) / "
                             f"(U - 1)), got {sp.w_rate_from}")
        if sp.w_max is not None and not (finite(sp.w_max) and sp.w_max > 1.0):
            raise ValueError(f"single_pass.w_max must be > 1 or null, got {sp.w_max}")
        if sp.w_cond and self.mode == "lora":
            raise ValueError("single_pass.w_cond=true is not available with mode='lora' (a LoRA checkpoint stores "
                             "no w embedder); use mode='full' or 'difffit', or a fixed w (w_cond=false)")


def resolve_config(preset: str | None = None, config_file: str | os.PathLike | None = None,
                   sets: list[str] | None = None, *, shortcuts: list[tuple[str, str]] | None = None,
                   overrides: dict[str, Any] | None = None, **defaults: Any) -> TrainConfig:
    """defaults < ``defaults`` kwargs < preset < config file < ``overrides`` < ``shortcuts`` < ``sets``; validated.

    ``overrides`` is a nested dict of typed values (``{"steps": 500, "data": {"classes": [6, 7]}}``),
    what code passes (the demo, the regime search); ``sets`` are the command line's "key=value" strings.

    ``shortcuts`` are ``(flag, "key=value")`` pairs from command-line shortcut flags (``--base``, ``--data``...),
    applied like ``--set`` items but named by their flag in errors. A base given explicitly (config file,
    shortcut or ``--set``) means ``init='base'``, whatever the preset's ``init``; an explicit
    ``init='scratch'`` together with an explicit base is a contradiction and raises a ValueError naming both.
    """
    cfg = TrainConfig()
    if defaults:
        apply_overrides(cfg, defaults, source="defaults")
    file_data = read_config_file(config_file) if config_file else {}
    name = preset or file_data.get("preset")
    if name:
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        apply_overrides(cfg, PRESETS[name], source=f"preset {name}")
        cfg.preset = name
    explicit: dict[str, tuple[Any, str]] = {}  # init / base -> (value, where) of their last explicit setting
    if file_data:
        apply_overrides(cfg, {k: v for k, v in file_data.items() if k != "preset"}, source=str(config_file))
        explicit.update({k: (getattr(cfg, k), f"config file {config_file}")
                         for k in ("init", "base") if k in file_data})
    if overrides:
        apply_overrides(cfg, overrides, source="overrides")
        explicit.update({k: (getattr(cfg, k), "overrides") for k in ("init", "base") if k in overrides})
    items = [(flag, item) for flag, item in shortcuts or []] + [(f"--set {item}", item) for item in sets or []]
    for where, item in items:
        if "=" not in item:
            raise ValueError(f"{where}: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        set_key(cfg, key, value, source=where, raw=True)
        if key in ("init", "base"):
            explicit[key] = (getattr(cfg, key), where)
    _init_from_base(cfg, explicit)
    return cfg.validate()


def _init_from_base(cfg: TrainConfig, explicit: dict[str, tuple[Any, str]]) -> None:
    """An explicitly given base means init='base'; an explicit init='scratch' next to it is an error."""
    base, base_where = explicit.get("base", (None, ""))
    if not base:
        return
    init, init_where = explicit.get("init", (None, ""))
    if init == "scratch":
        raise ValueError(f"contradictory settings: init='scratch' ({init_where}) trains a new model from random "
                         f"weights, but base={base!r} ({base_where}) names a checkpoint to start from; "
                         "drop one of them (a base means init='base')")
    if not init_where:  # the preset's or the default's init gives way to an explicit base
        cfg.init = "base"
