"""Configuration of the 2-D study: one dataclass with defaults, and named presets (no torch import).

Default picture: 25 source classes, one Gaussian mode each, on a 5 x 5 grid over [-4, 4]^2
(the broad pre-training distribution); a disk-shaped target region in the gap between four
source modes, holding two target classes with two narrow modes each (on the two diagonals of
the disk); 5 real samples per class. ``PRESETS`` holds the other settings the study reports.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ...io.config_files import ConfigMixin, read_config_file

TRACKS = ("exact", "learned")


@dataclass
class ToyConfig(ConfigMixin):
    """Everything a ``dog toy`` run depends on (saved as config.json next to its results)."""

    # --- scenario ---
    source_grid: int = 5                       # source modes per side; each mode is a source class
    source_spacing: float = 2.0                # distance between neighbouring source modes
    source_std: float = 0.45                   # isotropic std of a source mode
    region_center: tuple[float, float] = (1.0, 1.0)
    region_radius: float = 0.9                 # the target region is this disk
    # class 0 on one diagonal of the disk, class 1 on the other (interleaved modes)
    target_means: tuple[tuple[float, float], ...] = ((0.6, 1.4), (1.4, 0.6), (0.6, 0.6), (1.4, 1.4))
    target_classes: tuple[int, ...] = (0, 0, 1, 1)   # target class of each target mode
    target_std: float = 0.1                    # isotropic std of a target mode
    real_per_class: int = 5                    # real target samples per class (fine-tuning set)
    data_seed: int = 0                         # draws the real target samples
    # --- sampling ---
    tracks: tuple[str, ...] = TRACKS
    ws: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 5.0)
    seeds: tuple[int, ...] = (0, 1, 2)         # sampling seeds (and fine-tuning seeds on the learned track)
    samples_per_class: int = 1000
    sampler: str = "ddpm"                      # core sampler: "ddpm" (fixed variance) or "ddim"
    steps: int = 100                           # respaced steps of the 1000-step linear schedule
    # --- learned track ---
    hidden: int = 64                           # MLP width
    depth: int = 3                             # residual blocks
    label_dropout: float = 0.1                 # for pre-training and for the CFG fine-tune
    pretrain_steps: int = 3000
    pretrain_batch: int = 256
    pretrain_lr: float = 2e-3
    finetune_steps: int = 600
    finetune_batch: int = 256
    finetune_lr: float = 1e-3
    train_seed: int = 0
    # --- metrics ---
    near_radius: float = 3.0                   # "near a mode" = within this many mode stds (precision)
    sw_projections: int = 256                  # directions of the sliced Wasserstein-2 distance
    metric_seed: int = 12345                   # reference draws and projections of the metrics
    # --- figure ---
    figure_w: float = 3.0                      # guidance weight shown in panels (b)-(d)
    arrow_t: int = 200                         # original diffusion step of the arrows in panel (d)
    arrow_grid: int = 9                        # arrows per side in panel (d)
    arrow_class: int = 0                       # target class whose guidance directions are drawn
    # --- execution ---
    threads: int = 1                           # torch intra-op threads (0: torch's default)

    def __post_init__(self) -> None:
        self.region_center = tuple(float(v) for v in self.region_center)
        self.target_means = tuple(tuple(float(v) for v in m) for m in self.target_means)
        self.target_classes = tuple(int(c) for c in self.target_classes)
        self.tracks = tuple(self.tracks)
        self.ws = tuple(float(w) for w in self.ws)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.validate()

    def validate(self) -> None:
        if len(self.region_center) != 2 or any(len(m) != 2 for m in self.target_means):
            raise ValueError("region_center and every target_means entry must be 2-D points")
        if len(self.target_classes) != len(self.target_means):
            raise ValueError(f"target_classes has {len(self.target_classes)} entries for "
                             f"{len(self.target_means)} target_means")
        if sorted(set(self.target_classes)) != list(range(self.num_target_classes)):
            raise ValueError(f"target_classes must use every class 0..K-1, got {self.target_classes}")
        bad = [t for t in self.tracks if t not in TRACKS]
        if bad or not self.tracks:
            raise ValueError(f"tracks must be a non-empty subset of {TRACKS}, got {self.tracks}")
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        if not self.ws or not self.seeds:
            raise ValueError("ws and seeds must be non-empty")
        if not 0 <= self.arrow_t < 1000 or not 0 <= self.arrow_class < self.num_target_classes:
            raise ValueError(f"arrow_t must be in 0..999 and arrow_class a target class, got "
                             f"{self.arrow_t}, {self.arrow_class}")
        for name in ("source_grid", "real_per_class", "samples_per_class", "steps", "hidden", "depth",
                     "pretrain_steps", "pretrain_batch", "finetune_batch", "sw_projections", "arrow_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.steps <= 1000:  # respaced from the 1000-step schedule; one step has no posterior
            raise ValueError(f"steps must be in 2..1000 (respaced steps of the 1000-step schedule), got {self.steps}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")

    @property
    def num_target_classes(self) -> int:
        return max(self.target_classes) + 1

    @classmethod
    def read_overrides(cls, path: str | Path) -> dict:
        """The keys of a TOML/YAML/JSON file of overrides, checked against this dataclass's fields."""
        values = read_config_file(path)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{path}: unknown ToyConfig key(s) {unknown}; expected some of {sorted(names)}")
        return values


# Named variants (overrides of the defaults), one line per setting reported in docs/toy_study.md.
PRESETS: dict[str, dict] = {
    "default": {},
    # the two classes side by side (left / right half of the disk) instead of interleaved
    "side-by-side": {"target_means": ((0.55, 1.3), (0.7, 0.55), (1.35, 1.4), (1.45, 0.7)), "target_std": 0.12},
    # the same scenario with a fine-tune run to (near) convergence: 2.5x the steps at 3x the rate
    "long-finetune": {"finetune_steps": 1500, "finetune_lr": 3e-3},
    # the target region sits on a NARROW source mode and the target is broader than it:
    # DoG's repulsion from the pre-training density pushes samples out of the region
    "dense-source": {"region_center": (0.0, 0.0), "region_radius": 1.0, "source_std": 0.15, "target_std": 0.2,
                     "target_means": ((-0.4, 0.4), (0.4, -0.4), (-0.4, -0.4), (0.4, 0.4))},
}


def preset_config(name: str, **overrides) -> "ToyConfig":
    """ToyConfig of a named preset, with further overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown toy preset {name!r}; expected one of {sorted(PRESETS)}")
    return ToyConfig(**{**PRESETS[name], **overrides})
