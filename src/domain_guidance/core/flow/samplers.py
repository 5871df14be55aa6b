"""SiT's samplers for velocity (flow-matching) models, registered in ``core.sampler_registry.SAMPLERS``.

The denoiser is called at SiT time t in [0, 1] (t = 0 noise, t = 1 data), so a guidance
interval is given in SiT time too. Outputs beyond the first C channels (the unused learned-sigma
half of the DiT layout) are ignored. ``steps`` is a number of integration steps:

- ``ode-euler`` / ``ode-heun``: ``steps`` equal steps on t = 0 .. 1 (1 and 2 network evaluations per
  step); SiT's ``--num-sampling-steps N`` with a fixed-grid torchdiffeq method is ``steps = N - 1``.
- ``ode-dopri5``: SiT's default ODE solver (torchdiffeq, adaptive; ``atol``/``rtol`` as SiT:
  1e-6 / 1e-3). The step size is chosen for the whole batch, so a sample matches across batch
  sizes to the solver tolerance, not bit for bit.
- ``sde-euler``: Euler-Maruyama on ``dx = [v + w(t) score] dt + sqrt(2 w(t)) dW`` over
  ``steps - 1`` steps on t = t0 .. 1 - last_step_size, then SiT's last step ("Mean": one
  noise-free drift step of ``last_step_size``): ``steps`` network evaluations, the same count as
  SiT's ``--num-sampling-steps``. Defaults are SiT's CLI defaults (diffusion_form "sigma", norm 1,
  last step "Mean" of size 0.04). "SBDM" (w infinite at t = 0) starts at t0 = ``sample_eps``
  (1e-3); SiT starts velocity models at 0 there, which divides by zero.

``clip_denoised=True`` clamps the final sample to [-1, 1] (pixel models).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..sampler_registry import MissingDependency, PredictingDenoiser, StepCallback, register_sampler
from ..seeds import PerSampleNoise
from .path import DIFFUSION_FORMS, diffusion_coefficient, sde_drift, velocity_to_data

FLOW = ("velocity",)
LAST_STEPS = {"mean": "Mean", "tweedie": "Tweedie", "euler": "Euler", "none": None}


def parse_steps(steps: str | int, name: str, minimum: int) -> int:
    """A plain integer >= minimum."""
    text = str(steps).strip()
    if not text.isdigit() or int(text) < minimum:
        raise ValueError(f"steps {steps!r}: the {name} sampler takes a number of integration steps >= {minimum}, "
                         "e.g. '50'")
    return int(text)


def _grid(t0: float, t1: float, points: int) -> list[float]:
    return torch.linspace(t0, t1, points, dtype=torch.float64).tolist()


def _descending(times: list[float]) -> list[float]:
    return sorted(times, reverse=True)


def velocity(denoiser: PredictingDenoiser, x: torch.Tensor, t: float, labels: torch.Tensor) -> torch.Tensor:
    """The denoiser's velocity at SiT time t: (N, C, ...) from an output of >= C channels."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
    return denoiser(x, tt, labels)[:, : x.shape[1]].to(x.dtype)


def _finish(x: torch.Tensor, clip_denoised: bool) -> torch.Tensor:
    return x.clamp(-1, 1) if clip_denoised else x


def _report(callback: StepCallback | None, i: int, t: float, x: torch.Tensor, v: torch.Tensor,
            x_next: torch.Tensor) -> None:
    if callback is not None:
        tt = torch.full((x.shape[0],), t, device=x.device)
        callback({"i": i, "t": tt, "x": x, "denoised": velocity_to_data(v, x, tt), "x_next": x_next})


# ---- ODE ---------------------------------------------------------------------------------------

def _ode_timesteps(name: str, evaluated_last: bool) -> Callable[..., list[float]]:
    def timesteps(steps: str | int, **options: object) -> list[float]:
        grid = _grid(0.0, 1.0, parse_steps(steps, name, 1) + 1)
        return _descending(grid if evaluated_last else grid[:-1])
    return timesteps


@register_sampler("ode-euler", predictions=FLOW, timesteps=_ode_timesteps("ode-euler", False), time_range=(0.0, 1.0),
                  help="flow ODE dx/dt = v, Euler (1 evaluation per step)")
def ode_euler(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 50,
              step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None,
              clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """Explicit Euler from noise (t = 0) to data (t = 1) over ``steps`` equal steps."""
    ts = _grid(0.0, 1.0, parse_steps(steps, "ode-euler", 1) + 1)
    x = noise  # (N, C, H, W)
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc="ode-euler sampling", leave=False):
        v = velocity(denoiser, x, ts[i], labels)
        x_next = x + (ts[i + 1] - ts[i]) * v
        _report(callback, i, ts[i], x, v, x_next)
        x = x_next
    return _finish(x, clip_denoised)


@register_sampler("ode-heun", predictions=FLOW, timesteps=_ode_timesteps("ode-heun", True), time_range=(0.0, 1.0),
                  help="flow ODE dx/dt = v, Heun (2nd order, 2 evaluations per step)")
def ode_heun(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 50,
             step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None,
             clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """Heun's method (explicit trapezoid) from t = 0 to 1 over ``steps`` equal steps."""
    ts = _grid(0.0, 1.0, parse_steps(steps, "ode-heun", 1) + 1)
    x = noise  # (N, C, H, W)
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc="ode-heun sampling", leave=False):
        h = ts[i + 1] - ts[i]
        v = velocity(denoiser, x, ts[i], labels)
        v_end = velocity(denoiser, x + h * v, ts[i + 1], labels)
        x_next = x + 0.5 * h * (v + v_end)
        _report(callback, i, ts[i], x, v, x_next)
        x = x_next
    return _finish(x, clip_denoised)


def _odeint() -> Callable[..., torch.Tensor]:
    """torchdiffeq's ``odeint``; when torchdiffeq is missing, one line saying what to install."""
    try:
        from torchdiffeq import odeint
    except ImportError:
        raise MissingDependency("sampler 'ode-dopri5' needs torchdiffeq, which is not installed: pip install "
                                "'domain-guidance[flow]' (or pip install torchdiffeq); or use --sampler ode-heun "
                                "or ode-euler, which need nothing more") from None
    return odeint


def _check_dopri5(options: dict) -> None:
    _odeint()  # before any model loads
    _check_tolerances(options)


def _check_tolerances(options: dict) -> None:
    for name in ("atol", "rtol"):
        tol = options[name]
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"{name}: expected a tolerance > 0, got {tol} (e.g. 1e-5)")


@register_sampler("ode-dopri5", predictions=FLOW, timesteps=_ode_timesteps("ode-dopri5", True), time_range=(0.0, 1.0),
                  help="flow ODE, adaptive Dormand-Prince (SiT's default; needs torchdiffeq)",
                  check_options=_check_dopri5)
def ode_dopri5(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 50,
               step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, atol: float = 1e-6,
               rtol: float = 1e-3, clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """Adaptive dopri5 through torchdiffeq; ``steps`` sets the output grid as SiT's (``N - 1`` intervals)."""
    odeint = _odeint()
    _check_tolerances({"atol": atol, "rtol": rtol})
    grid = torch.tensor(_grid(0.0, 1.0, parse_steps(steps, "ode-dopri5", 1) + 1), dtype=noise.dtype,
                        device=noise.device)
    calls = [0]

    def drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        v = velocity(denoiser, x, float(t), labels)
        if callback is not None:  # one report per network evaluation (x_next is not known to the solver)
            tt = torch.full((x.shape[0],), float(t), device=x.device)
            callback({"i": calls[0], "t": tt, "x": x, "denoised": velocity_to_data(v, x, tt)})
        calls[0] += 1
        return v

    x = odeint(drift, noise, grid, method="dopri5", atol=atol, rtol=rtol)[-1]  # (N, C, H, W)
    return _finish(x, clip_denoised)


# ---- SDE ---------------------------------------------------------------------------------------

def sde_interval(diffusion_form: str, last_step: str | None, last_step_size: float,
                 sample_eps: float) -> tuple[float, float, str | None]:
    """(t0, t1, canonical last step) of the Euler-Maruyama part, as SiT's ``check_interval``."""
    if diffusion_form not in DIFFUSION_FORMS:
        raise ValueError(f"diffusion_form: unknown {diffusion_form!r}; expected one of {list(DIFFUSION_FORMS)}")
    key = "none" if last_step is None else str(last_step).lower()
    if key not in LAST_STEPS:
        raise ValueError(f"last_step: unknown {last_step!r}; expected Mean, Tweedie, Euler or None")
    last = LAST_STEPS[key]
    if last is None:
        last_step_size = 0.0
    elif not 0 < last_step_size < 1:
        raise ValueError(f"last_step_size: expected a size in (0, 1), got {last_step_size}")
    t0 = 0.0
    if diffusion_form == "SBDM":
        if not 0 < sample_eps < 1 - last_step_size:
            raise ValueError(f"sample_eps: SBDM needs a start time in (0, {1 - last_step_size:g}), got {sample_eps}")
        t0 = sample_eps
    return t0, 1.0 - last_step_size, last


def _sde_timesteps(steps: str | int, diffusion_form: str = "sigma", last_step: str | None = "Mean",
                   last_step_size: float = 0.04, sample_eps: float = 1e-3, **options: object) -> list[float]:
    """The times sde-euler evaluates with these options: its grid, whose end t1 only the last step visits."""
    t0, t1, last = sde_interval(diffusion_form, last_step, last_step_size, sample_eps)
    grid = _grid(t0, t1, parse_steps(steps, "sde-euler", 2))
    return _descending(grid if last is not None else grid[:-1])


def _check_sde(options: dict) -> None:
    sde_interval(options["diffusion_form"], options["last_step"], options["last_step_size"], options["sample_eps"])
    if not options["diffusion_norm"] >= 0:  # w(t) is a variance rate: a negative one gives sqrt(<0) = NaN
        raise ValueError(f"diffusion_norm: expected a number >= 0, got {options['diffusion_norm']} "
                         "(the SDE's diffusion scale; 0 is the probability-flow ODE)")


@register_sampler("sde-euler", predictions=FLOW, timesteps=_sde_timesteps, time_range=(0.0, 1.0),
                  help="flow SDE, Euler-Maruyama with SiT's diffusion forms and last step (steps = evaluations)",
                  check_options=_check_sde)
def sde_euler(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 250,
              step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None,
              diffusion_form: str = "sigma", diffusion_norm: float = 1.0, last_step: str | None = "Mean",
              last_step_size: float = 0.04, sample_eps: float = 1e-3, clip_denoised: bool = False,
              progress: bool = False) -> torch.Tensor:
    """Euler-Maruyama over ``steps - 1`` steps, then SiT's ``last_step`` (Mean | Tweedie | Euler | None)."""
    _check_sde({"diffusion_form": diffusion_form, "diffusion_norm": diffusion_norm, "last_step": last_step,
                "last_step_size": last_step_size, "sample_eps": sample_eps})
    t0, t1, last = sde_interval(diffusion_form, last_step, last_step_size, sample_eps)
    ts = _grid(t0, t1, parse_steps(steps, "sde-euler", 2))
    dt = ts[1] - ts[0]
    x = noise  # (N, C, H, W)
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc="sde-euler sampling", leave=False):
        t = torch.full((x.shape[0],), ts[i], device=x.device, dtype=x.dtype)
        v = velocity(denoiser, x, ts[i], labels)
        w = diffusion_coefficient(t, x, diffusion_form, diffusion_norm)  # (N, 1, 1, 1)
        fresh = step_noise.randn_like(x) if step_noise is not None else torch.randn_like(x)
        x_next = x + sde_drift(v, x, t, w) * dt + torch.sqrt(2 * w * dt) * fresh
        _report(callback, i, ts[i], x, v, x_next)
        x = x_next
    if last is not None:
        t = torch.full((x.shape[0],), t1, device=x.device, dtype=x.dtype)
        v = velocity(denoiser, x, t1, labels)
        if last == "Mean":
            w = diffusion_coefficient(t, x, diffusion_form, diffusion_norm)
            x_next = x + sde_drift(v, x, t, w) * last_step_size
        elif last == "Tweedie":  # E[data | x_t] = (x + (1 - t)^2 score) / t = x + (1 - t) v
            x_next = velocity_to_data(v, x, t)
        else:  # "Euler": one probability-flow step
            x_next = x + v * last_step_size
        _report(callback, len(ts) - 1, t1, x, v, x_next)
        x = x_next
    return _finish(x, clip_denoised)

