"""Configuration of ``dog demo --study``: the map's axes, the ablations to run, the base demo config.

Kept apart from ``study.py`` (which imports torch through the pipelines) so the CLI can build it cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...io.config_files import ConfigMixin
from .config import DemoConfig
from .domains import TARGETS

ABLATIONS = ("steps", "uncond-guide", "nine-grid")


# the coverage axis: a glyph study maps both glyph targets (the same source, the same judge), an animal study its own
COVERAGE = {"covered": ["covered", "outside"], "outside": ["covered", "outside"], "animal": ["animal"]}


def study_base() -> DemoConfig:
    """The demo's quick config as the study's base: w = 1.5 only and no interval row (a map per w costs a
    whole study); lengths and target-set sizes come from the study's axes."""
    return DemoConfig(out="runs/demo-study", w=[1.5], dog_interval=None)


@dataclass
class StudyConfig(ConfigMixin):
    """The map's axes, which ablations to run, and the base demo config of everything else."""

    base: DemoConfig = field(default_factory=study_base)
    map: bool = True  # the DoG-vs-CFG map over targets x finetune_steps x images_per_class
    # the coverage axis: targets inside (covered) and outside the source's domain; None: COVERAGE[base.target]
    targets: list[str] | None = None
    finetune_steps: list[int] = field(default_factory=lambda: [250, 500, 1000])
    images_per_class: list[int] = field(default_factory=lambda: [10, 50, 200])
    ablations: list[str] = field(default_factory=list)  # of ABLATIONS; they run on the base cell
    ablation_w: float = 1.5  # guidance weight of the steps and uncond-guide ablations
    sampling_steps: list[int] = field(default_factory=lambda: [10, 25, 50, 100])  # steps ablation (paper Fig. 3)
    uncond_guide_steps: list[int] = field(default_factory=lambda: [250, 500, 1000])  # its checkpoints
    grid_w: list[float] = field(default_factory=lambda: [2.0, 3.0, 4.0])  # nine-grid rows (paper Fig. 4)
    grid_images: int = 8  # images per nine-grid panel (the same seeds in every panel)
    blend: float = 0.5  # nine-grid middle column: the fine-tuned model's share of the blended guide

    def __post_init__(self) -> None:
        if self.targets is None:
            self.targets = list(COVERAGE[self.base.target])
        self.validate()

    def validate(self) -> "StudyConfig":
        """Raise ValueError naming the first bad field and what was expected."""
        self.base.validate()
        if not self.targets or len(set(self.targets)) != len(self.targets) or any(t not in TARGETS for t in self.targets):
            raise ValueError(f"targets must be distinct names of {sorted(TARGETS)}, got {self.targets}")
        for name in ("finetune_steps", "images_per_class", "sampling_steps", "uncond_guide_steps"):
            values = getattr(self, name)
            if not values or any(int(v) != v or v < 1 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{name} must be a non-empty list of distinct integers >= 1, got {values}")
        if min(self.sampling_steps) < 2:
            raise ValueError(f"sampling_steps must be >= 2 each (a sampler needs 2 steps), got {self.sampling_steps}")
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"ablations: unknown {unknown}; expected some of {list(ABLATIONS)}")
        if not self.map and not self.ablations:
            raise ValueError("the study has nothing to do: map is off and no ablation is named")
        if self.ablation_w < 1.0 or not self.grid_w or any(w < 1.0 for w in self.grid_w):
            raise ValueError(f"ablation_w and grid_w must be guidance weights >= 1, got {self.ablation_w} and "
                             f"{self.grid_w}")
        if self.grid_images < 1:
            raise ValueError(f"grid_images must be >= 1, got {self.grid_images}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1] (1: CFG's unconditional branch, 0: DoG's), got {self.blend}")
        return self
