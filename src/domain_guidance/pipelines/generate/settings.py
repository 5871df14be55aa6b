"""``GenerationSettings``: everything that decides the pixels of a sample set, besides the weights.

One object is the single source for ``dog sample``, ``dog sweep``, ``dog demo`` and the training
grids: ``build_denoiser`` turns it into the guided denoiser, ``generate`` keys every shard by its
hash, and ``settings.json`` records it. Options that cannot matter are normalised (an unguided run
has scale 1, no channels and no interval), so equal pixels always mean equal records.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from ...core.guidance import METHODS
from ...core.precision import PRECISIONS, resolve_precision
from ...core.sampler_registry import COMMON_KEYWORDS
from ...core.sampling import get_sampler
from ...io.config_files import ConfigMixin
from ..applicability import SAMPLER_OPTION_RULES, SAMPLING_RULES, Context, check_applicable

MAX_SAMPLES = 10_000_000  # a seed list longer than this is a typo (ADM protocols use 50,000)
MAX_SEED = 2 ** 63 - 1  # torch.Generator.manual_seed range
SEED_SYNTAX = ("seeds are integers 0..2**63-1 (no negative seeds), given as a range, a list or both: "
               "'0-49999', '0,5,7', '0-9,100-109'")


@dataclass
class GenerationSettings(ConfigMixin):
    """Sampling choices of a sample set. ``clip_denoised=None`` means auto (pixels yes, latents no, as DiT)."""

    method: str = "dog"
    scale: float = 1.5
    channels: int | None = None
    interval: tuple[float, float] | None = None
    sampler: str = "ddpm"
    steps: str = "250"
    eta: float = 0.0
    clip_denoised: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)  # further keyword options of the sampler
    precision: str = "auto"  # network arithmetic: fp32, tf32, bf16, fp16; auto: fp32 on a CPU, tf32 on CUDA
    model_w: float | None = None  # w fed to a w-conditioned single-pass model (None: the w it was trained for)
    seeds: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; expected one of {list(METHODS)}")
        try:
            spec = get_sampler(self.sampler)
        except ValueError as e:
            raise ValueError(f"sampler: {e}") from None
        self.steps = str(self.steps).strip()
        self.options = dict(self.options)
        spec.check(self.options)  # unknown options, wrong types and values the loop cannot use
        check_applicable(self.options, Context(sampler=self.sampler, options=self.options), SAMPLER_OPTION_RULES)
        try:  # the times this sampler visits with these options: an interval is checked against them
            timesteps = spec.timesteps(self.steps, **self.options)  # raises on a bad spec or fewer than 2 steps
        except ValueError as e:
            raise ValueError(f"steps: {e}") from None
        self.scale = float(self.scale)
        if not math.isfinite(self.scale):
            raise ValueError(f"scale: the guidance weight must be a finite number, got {self.scale}")
        self.eta = float(self.eta)
        if not math.isfinite(self.eta) or self.eta < 0:
            raise ValueError(f"eta: expected a finite number >= 0, got {self.eta}")
        check_applicable(["eta"] if self.eta != 0 else [], Context(sampler=self.sampler), SAMPLING_RULES)
        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise ValueError(f"precision: unknown {self.precision!r}; expected auto or one of {', '.join(PRECISIONS)}")
        if self.model_w is not None:
            self.model_w = float(self.model_w)
            if not math.isfinite(self.model_w):
                raise ValueError(f"model_w: expected a finite guidance weight for a w-conditioned model, got {self.model_w}")
        if self.method == "unguided":  # nothing below changes an unguided sample: record it plainly
            self.scale, self.channels, self.interval = 1.0, None, None
        if self.channels is not None and int(self.channels) < 1:
            raise ValueError(f"channels: expected a count >= 1 of guided channels, got {self.channels}")
        if self.interval is not None:
            self.interval = _check_interval(self.interval, spec.time_range, timesteps)
        self.seeds = [int(s) for s in self.seeds]
        self.labels = [int(y) for y in self.labels]
        check_seeds(self.seeds)
        if self.labels and len(self.labels) != len(self.seeds):
            raise ValueError(f"labels: got {len(self.labels)} labels for {len(self.seeds)} seeds")

    def pixel_fields(self) -> dict[str, Any]:
        """The fields that decide every image of the set (seeds and labels decide which images)."""
        d = self.to_dict()
        del d["seeds"], d["labels"]
        if d.get("precision") == "fp32":  # the arithmetic of every set made before the field: their keys stay valid
            del d["precision"]
        if d.get("model_w") is None:  # unused: keys of sets made before the field existed stay valid
            d.pop("model_w", None)
        return d

    def resolved(self, latent: bool, device: Any = "cpu") -> "GenerationSettings":
        """A copy with ``clip_denoised`` decided for a pixel (``latent=False``) or latent model, and ``precision``
        for ``device`` (auto: fp32 on a CPU, tf32 on a CUDA GPU that has it; one the device lacks is refused)."""
        clip = (not latent) if self.clip_denoised is None else bool(self.clip_denoised)
        return dataclasses.replace(self, clip_denoised=clip, precision=resolve_precision(self.precision, device))


def sampler_options(fn: Any) -> dict[str, Any]:
    """Keyword options of a sampler function beyond the common ones, with their defaults."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in COMMON_KEYWORDS}


def _check_interval(interval: Any, time_range: tuple[float, float], timesteps: list[int]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval: expected (LO, HI), got {interval!r}") from None
    t0, t1 = time_range
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"interval: expected finite LO <= HI, got ({lo:g}, {hi:g})")
    if lo < t0 or hi > t1:
        raise ValueError(f"interval: ({lo:g}, {hi:g}) is outside the sampler's timestep range {t0:g}..{t1:g}")
    if not any(lo <= t <= hi for t in timesteps):
        raise ValueError(f"interval: no sampling step falls in ({lo:g}, {hi:g}), so guidance would never apply; "
                         f"the steps visit timesteps {timesteps[-1]:g}..{timesteps[0]:g}")
    return lo, hi


def check_seeds(seeds: list[int]) -> None:
    """Refuse an empty, duplicated, oversized or out-of-range seed list."""
    if len(seeds) > MAX_SAMPLES:
        raise ValueError(f"seeds: {len(seeds)} samples requested; at most {MAX_SAMPLES:,} per run")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds: the list has duplicates; each sample needs its own seed")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"seeds: {bad[0]} is out of range; {SEED_SYNTAX}")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an integer") from None


def parse_seeds(spec: str | list[int]) -> list[int]:
    """"0-99", "1,5,7" or "0-9,100-109" -> list of ints (order kept; duplicates and huge lists refused)."""
    if isinstance(spec, list):
        seeds = [int(s) for s in spec]
    else:
        seeds, total = [], 0
        for part in str(spec).split(","):
            part = part.strip()
            if part.startswith("-") or part.endswith("-") or "--" in part:  # "-1", "-3-5", "5-", "3--5"
                raise ValueError(f"seeds: {part!r} is neither a seed nor a range; {SEED_SYNTAX}")
            if "-" in part:
                lo_text, hi_text = part.split("-", 1)
                lo, hi = _int(lo_text.strip(), "seeds"), _int(hi_text.strip(), "seeds")
                if hi < lo:
                    raise ValueError(f"seeds: bad range {part!r}, the end is before the start")
                total += hi - lo + 1
                if total > MAX_SAMPLES:  # checked before the list is built
                    raise ValueError(f"seeds: {spec!r} asks for more than {MAX_SAMPLES:,} samples")
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(_int(part, "seeds"))
    if not seeds:
        raise ValueError(f"seeds: none in {spec!r}; expected e.g. '0-49999' or '1,2,3'")
    check_seeds(seeds)
    return seeds


def balanced_labels(n: int, num_classes: int) -> list[int]:
    """Class-balanced labels: sample i gets class i mod K."""
    return [i % num_classes for i in range(n)]


def parse_labels(spec: str | list[int] | None, n: int, num_classes: int) -> list[int]:
    """Explicit labels (one, or one per seed, comma separated) or class-balanced when None."""
    if spec is None or spec == "":
        return balanced_labels(n, num_classes)
    if isinstance(spec, str):
        labels = [_int(x.strip(), "labels") for x in spec.split(",")]
    else:
        labels = [int(x) for x in spec]
    if len(labels) == 1:
        labels = labels * n
    if len(labels) != n:
        raise ValueError(f"labels: got {len(labels)} labels for {n} seeds; give one label or one per seed")
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise ValueError(f"labels: {bad[0]} is out of range; the model has classes 0..{num_classes - 1}")
    return labels
