"""Configuration of the embedded transfer benchmark (``dog demo``): a dataclass with two named sizes.

``target`` picks the benchmark (domains.py): ``covered`` (the default: a glyph target inside the source's
domain), ``outside`` (glyph shapes the source never saw) or ``animal`` (the earlier animal-mnist demo); the
source, presets, target classes and fine-tune length default to the target's.

``quick`` is the README size (within 15 minutes on 2 CPU cores, most of it FID-Inception features);
``full`` (``dog demo --full``) takes more samples and a finer w grid for a more stable measurement
(hours on a CPU). ``flow`` (``dog demo --flow``) turns either into the flow-matching variant (see flow.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...core.interval import RECOMMENDED_SIGMA, ddpm_interval
from ...io.config_files import ConfigMixin
from .domains import DEFAULT_TARGET, DemoTarget, get_target
from .flow import FLOW_SAMPLER, FLOW_SOURCE_PRESET, default_flow_source, flow_interval, matched_steps


@dataclass
class DemoConfig(ConfigMixin):
    """One demo run: source model, target fine-tune(s), sampling grid and evaluation sizes."""

    out: str = "runs/demo"
    target: str = DEFAULT_TARGET  # covered | outside | animal (domains.py); None fields below default to its values
    prediction: str = "eps"  # eps: DiT (ADM diffusion); velocity: flow matching (SiT), the `--flow` variant
    # source model: a run dir / checkpoint (an error if it holds none), or with pretrain=True one trained here
    source: str | None = None  # None: the target's shipped source
    source_preset: str | None = None
    pretrain: bool = False  # pre-train source_preset into out/source (resuming it) instead of using `source`
    pretrain_steps: int | None = None  # None: what the shipped source checkpoint was trained for
    model: str | None = None  # pre-training model size override (None: the preset's)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {hidden_size: 32, depth: 1}
    # target domain and fine-tuning (published protocol: label dropout 0.1)
    target_preset: str | None = None
    target_classes: list[int] | None = None  # original class ids in the target's dataset
    images_per_class: int = 50
    finetune_steps: int | None = None  # None: the target's (covered / outside: 2000, animal: 1000; docs/regime-search.md)
    finetune_lr: float | None = 3e-4  # None: the target preset's
    finetune_batch: int = 32
    also_without_dropout: bool = False  # also fine-tune with label dropout 0 (unguided / DoG only)
    # typed TrainConfig overrides for both trainings, nested like the config, e.g. {"lr": 3e-4, "ema": {"decay": 0.999}}
    train_overrides: dict[str, Any] = field(default_factory=dict)
    # sampling
    w: list[float] = field(default_factory=lambda: [1.5, 3.0])
    # DoG is also sampled with guidance only for lo <= t <= hi (original DDPM timesteps 0..999) at every w;
    # None: no interval row. Default: EDM2's recommended sigma in (0.28, 5.42] (Kynkaenniemi et al. 2024), t in
    # [82, 578] on the DiT schedule (core/interval.py; docs/protocols.md)
    dog_interval: list[float] | None = field(default_factory=lambda: list(ddpm_interval(*RECOMMENDED_SIGMA)))
    samples: int = 100  # per (method, w, seed replicate); the real floor sets have the same N
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # replicate r uses seeds r*100000 + range(samples)
    sampler: str = "ddim"
    steps: int = 25
    batch_size: int = 50
    # evaluation
    fid: bool = True  # real FID-Inception (about 8 img/s on 2 cores)
    reference_images: int | None = 400  # held-out target test images used as reference (None: all)
    kid_subsets: int = 100  # KID: mean / std over this many random subsets of min(samples, reference) features
    # the 10-class CNN judge, trained once and cached in out/, on the ~45% of the train split kept out of the floors:
    # 8 epochs = 226 steps of 128 (held-out accuracy 0.881 measured; 4 epochs gave 0.839, 12 gave 0.883)
    classifier_epochs: float = 8.0
    classifier_batch: int = 128
    progress: bool = True

    def __post_init__(self) -> None:
        for name, value in target_defaults(get_target(self.target)).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.validate()

    @classmethod
    def from_dict(cls, values: Any, source: str = "config") -> "DemoConfig":
        """As ConfigMixin's; a saved config without ``target`` was written before targets existed, when the demo
        was the animal one, so it reads back as the animal target (not as today's default)."""
        if isinstance(values, dict) and "target" not in values:
            values = {**values, "target": "animal"}
        return super().from_dict(values, source)

    @property
    def spec(self) -> DemoTarget:
        """The target's data, judge and exact domain measure (domains.py)."""
        return get_target(self.target)

    def validate(self) -> "DemoConfig":
        """Raise ValueError naming the first bad field."""
        if not self.w or any(w < 1.0 for w in self.w):
            raise ValueError(f"w must be a non-empty list of weights >= 1, got {self.w}")
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (FID needs two images), got {self.samples}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must name at least one replicate, without repeats, got {self.seeds}")
        if self.prediction not in ("eps", "velocity"):
            raise ValueError(f"prediction must be 'eps' (DiT) or 'velocity' (flow matching), got {self.prediction!r}")
        flow = self.prediction == "velocity"
        top, unit = (1.0, "SiT time, 0 = noise") if flow else (float("inf"), "DDPM timesteps")
        if self.dog_interval is not None and (len(self.dog_interval) != 2
                                              or not 0 <= self.dog_interval[0] <= self.dog_interval[1] <= top):
            raise ValueError(f"dog_interval must be None or [lo, hi] with 0 <= lo <= hi{' <= 1' if flow else ''} "
                             f"({unit}), got {self.dog_interval}")
        from ...core.sampling import get_sampler

        if self.prediction not in get_sampler(self.sampler).predictions:
            raise ValueError(f"sampler {self.sampler!r} does not integrate {self.prediction!r} models; "
                             + ("the flow variant takes ode-euler, ode-heun, ode-dopri5 or sde-euler" if flow
                                else "the eps demo takes ddim or ddpm"))
        times = get_sampler(self.sampler).timesteps(str(self.steps))  # the grid DoG's interval is checked against
        if self.dog_interval is not None and not any(self.dog_interval[0] <= t <= self.dog_interval[1]
                                                     for t in times):
            raise ValueError(f"dog_interval: no step of {self.sampler} with {self.steps} steps falls in "
                             f"[{self.dog_interval[0]:g}, {self.dog_interval[1]:g}] ({unit}), so the interval row "
                             f"would be unguided; the steps visit {min(times):g}..{max(times):g}")
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ValueError(f"finetune_lr must be > 0 or None, got {self.finetune_lr}")
        if self.kid_subsets < 1:
            raise ValueError(f"kid_subsets must be >= 1, got {self.kid_subsets}")
        if self.images_per_class < 1 or self.finetune_steps < 1 or self.pretrain_steps < 1:
            raise ValueError("images_per_class, finetune_steps and pretrain_steps must be >= 1")
        spec = get_target(self.target)
        if not self.target_classes or any(not 0 <= c < spec.judge_classes for c in self.target_classes):
            raise ValueError(f"target_classes must be {spec.dataset} ids 0..{spec.judge_classes - 1}, "
                             f"got {self.target_classes}")
        return self


def target_defaults(spec: DemoTarget) -> dict[str, Any]:
    """The config fields a target decides when they are not given."""
    return {"source": spec.source, "source_preset": spec.source_preset, "pretrain_steps": spec.pretrain_steps,
            "target_preset": spec.target_preset, "target_classes": list(spec.classes),
            "finetune_steps": spec.finetune_steps}


def retarget(cfg: DemoConfig, target: str) -> DemoConfig:
    """``cfg`` for another target: the fields that hold the old target's defaults take the new target's, the
    fields set to something else (an explicit --source, --finetune-steps...) stay."""
    old, new = target_defaults(cfg.spec), target_defaults(get_target(target))
    changed = {name: new[name] for name in new if getattr(cfg, name) == old[name]}
    return dataclasses.replace(cfg, target=target, **changed)


def default_out(base: str, target: str) -> str:
    """A variant's output folder: ``base`` for the default target, ``base-<target>`` for the others."""
    return base if target == DEFAULT_TARGET else f"{base}-{target}"


def quick(target: str = DEFAULT_TARGET) -> DemoConfig:
    """README size: 100 samples per setting, three seed replicates, w in {1.5, 3}, DoG also with the interval
    t in [82, 578] (sigma in (0.28, 5.42]), the target's fine-tune length at lr 3e-4 (within 15 minutes on 2
    cores: docs/demo.md has the measured wall time)."""
    return DemoConfig(out=default_out("runs/demo", target), target=target)


def full(target: str = DEFAULT_TARGET) -> DemoConfig:
    """``--full``: more samples, the w grid {1.25, 1.5, 2, 3, 4} (the U-shape), also the no-dropout fine-tune."""
    return DemoConfig(out=default_out("runs/demo-full", target), target=target, w=[1.25, 1.5, 2.0, 3.0, 4.0],
                      samples=500, seeds=[0, 1, 2], steps=50, reference_images=None, also_without_dropout=True,
                      classifier_epochs=12.0)


def flow(base: DemoConfig | None = None) -> DemoConfig:
    """``--flow``: ``base`` (default: quick, animal target) under flow matching: the velocity source, an ODE
    sampler (Heun) with about the network evaluations of its DDIM steps, the DoG interval at the same noise
    levels in SiT time, its own out dir (runs/demo-flow, runs/demo-full-flow). The shipped velocity source is
    the animal one, so the flow variant exists for the animal target only."""
    cfg = base if base is not None else quick("animal")
    if cfg.target != "animal":
        raise ValueError(f"the flow variant exists for the animal target only (its shipped velocity source is an "
                         f"animal-mnist model), got target {cfg.target!r}; pass --target animal with --flow")
    defaults = {default_out("runs/demo", "animal"): "runs/demo-flow",
                default_out("runs/demo-full", "animal"): "runs/demo-full-flow"}
    cfg.out = defaults.get(cfg.out, f"{cfg.out}-flow")
    cfg.prediction, cfg.source, cfg.source_preset = "velocity", default_flow_source(), FLOW_SOURCE_PRESET
    cfg.pretrain_steps = FLOW_PRETRAIN_STEPS
    cfg.sampler, cfg.steps = FLOW_SAMPLER, matched_steps(cfg.steps, FLOW_SAMPLER)
    cfg.dog_interval = flow_interval(cfg.dog_interval) if cfg.dog_interval is not None else None
    return cfg.validate()


FLOW_PRETRAIN_STEPS = 1000  # what the shipped flow source was trained for (assets/README.md)
VARIANTS = {"quick": quick, "full": full, "flow": flow}
