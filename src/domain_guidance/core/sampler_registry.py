"""The sampler registry: ``SAMPLERS[name]`` is a ``SamplerSpec`` (the loop, what it integrates, the times it visits,
its keyword options and their check). Sampler modules (``core.sampling``'s DDPM / DDIM, ``core.flow.samplers``)
import this module to register; ``core.sampling`` imports them, so imports point one way."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

StepCallback = Callable[[dict[str, Any]], None]

# keywords every sampler takes from the generation settings' own fields or the pipeline, not as an option
COMMON_KEYWORDS = frozenset({"steps", "step_noise", "callback", "clip_denoised", "progress", "diffusion", "eta"})


class PredictingDenoiser(Protocol):
    """What a sampler needs: the call, and what the network's output means."""

    prediction: str  # "eps" (DiT) or "velocity" (SiT)
    learn_sigma: bool  # eps output followed by as many variance channels

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


def _no_check(options: dict[str, Any]) -> None:
    return None


class MissingDependency(ValueError):
    """A sampler's optional package is not installed (a ValueError: the CLI reports it in one line)."""


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its loop, the predictions it integrates, the network times it visits and its options.

    ``timesteps(steps, **options)`` lists the network times evaluated (descending) for a steps spec and the
    sampler's options; ``check(options)`` refuses an option value the loop could not use (before any model loads).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    predictions: tuple[str, ...]
    timesteps: Callable[..., list[Any]]
    time_range: tuple[float, float]  # network time units, inclusive
    help: str
    check_options: Callable[[dict[str, Any]], None] = _no_check

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options of the loop beyond the common ones, with their defaults."""
        return {name: p.default for name, p in inspect.signature(self.fn).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in COMMON_KEYWORDS}

    def check(self, options: dict[str, Any]) -> None:
        """Refuse unknown options, values of the wrong type (the type of the option's default) or out of range."""
        allowed = self.options
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"options: {unknown} are not options of the {self.name} sampler; it takes "
                             f"{sorted(allowed) or 'none'}")
        for name, value in options.items():
            _check_type(name, value, allowed[name])
        try:
            self.check_options({**allowed, **options})
        except MissingDependency:  # not about the options: the message says what to install
            raise
        except ValueError as e:
            raise ValueError(f"options: {e}") from None


def _check_type(name: str, value: Any, default: Any) -> None:
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"options: {name}={value!r}: expected a number (default {default:g}), "
                             f"got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"options: {name}={value} is not finite; expected a finite number")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"options: {name}={value!r}: expected true or false, got {type(value).__name__}")
    elif isinstance(default, str) and not (value is None or isinstance(value, str)):
        raise ValueError(f"options: {name}={value!r}: expected a name (default {default!r}), "
                         f"got {type(value).__name__}")


SAMPLERS: dict[str, SamplerSpec] = {}


def register_sampler(name: str, *, predictions: tuple[str, ...], timesteps: Callable[..., list[Any]],
                     time_range: tuple[float, float], help: str,
                     check_options: Callable[[dict[str, Any]], None] = _no_check) -> Callable:
    """Decorator adding a sampler loop to ``SAMPLERS``."""
    def add(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        SAMPLERS[name] = SamplerSpec(name, fn, predictions, timesteps, time_range, help, check_options)
        return fn
    return add


def get_sampler(name: str) -> SamplerSpec:
    """The registered sampler ``name``; an unknown name is refused with the list."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def check_prediction(spec: SamplerSpec, denoiser: Any) -> None:
    """Refuse a denoiser whose prediction type the sampler does not integrate."""
    prediction = getattr(denoiser, "prediction", None)
    if prediction not in spec.predictions:
        fitting = sorted(name for name, other in SAMPLERS.items() if prediction in other.predictions)
        raise ValueError(f"sampler {spec.name!r} integrates {'/'.join(spec.predictions)} predictions, but the model "
                         f"predicts {prediction!r}; samplers for {prediction!r} models: {fitting}")
