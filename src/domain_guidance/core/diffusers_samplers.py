"""diffusers' schedulers as samplers of the registry: ``dpm-solver++``, ``unipc``, ``deis``, ``euler``, ``heun`` for
eps (DiT) models; ``flow-dpm-solver++``, ``flow-unipc``, ``flow-euler``, ``flow-heun`` for velocity (SiT) models.

Each wraps (never copies) a diffusers scheduler class, configured from the model's own schedule. Eps models: DiT's
(ADM's) linear betas 1e-4 .. 0.02 over 1000 steps, epsilon prediction; as diffusers' ``DiTPipeline`` does, the
scheduler sees only the first C output channels (the learned-variance half is dropped), and the network is called
at the scheduler's own timesteps (original DDPM steps, fractional for euler / heun with some spacings), so a
guidance interval is given in DDPM timesteps. Velocity models: SiT's linear path x = (1 - sigma) data + sigma
noise, i.e. sigma = 1 - t in SiT time (t = 0 noise); the network is called at t = 1 - sigma (a guidance interval
is in SiT time) and the scheduler is handed diffusers' flow prediction noise - data = -v. ``steps`` is the
scheduler's number of inference steps: one network evaluation per step (heun: ``2 steps - 1``).

Fresh noise of a stochastic step (``algorithm_type=sde-dpmsolver++``, ``euler`` with ``s_churn > 0``) comes from
each sample's own generator (``step_noise``), so sample i depends only on its seed. A sampler refuses the other
model kind. ``clip_denoised=True`` clamps the final sample to [-1, 1] (pixel models).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .flow.path import velocity_to_data
from .flow.samplers import parse_steps
from .sampler_registry import PredictingDenoiser, StepCallback, register_sampler
from .seeds import PerSampleNoise

EPS, FLOW = ("eps",), ("velocity",)
NUM_TRAIN_TIMESTEPS = 1000
# DiT's training chain (ADM ``linear_betas(1000)``) in diffusers' terms, as in DiT's published scheduler_config
MODEL_SCHEDULE = {"num_train_timesteps": NUM_TRAIN_TIMESTEPS, "beta_start": 1e-4, "beta_end": 0.02,
                  "beta_schedule": "linear", "prediction_type": "epsilon"}
SCHEDULERS = {"dpm-solver++": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler",
              "deis": "DEISMultistepScheduler", "euler": "EulerDiscreteScheduler", "heun": "HeunDiscreteScheduler"}
# velocity (SiT) models: diffusers' flow-matching schedulers, sigma = 1 - t (SiT time, t = 0 noise)
FLOW_SCHEDULERS = {"flow-dpm-solver++": "DPMSolverMultistepScheduler", "flow-unipc": "UniPCMultistepScheduler",
                   "flow-euler": "FlowMatchEulerDiscreteScheduler", "flow-heun": "FlowMatchHeunDiscreteScheduler"}
FLOW_SIGMAS = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}  # the multistep solvers on the flow path
RENAMED = {"order": "solver_order"}  # our option name -> the scheduler's config key
STEP_OPTIONS = frozenset({"s_churn"})  # options of ``scheduler.step``, not of its config
CHOICES = {"algorithm_type": ("dpmsolver++", "sde-dpmsolver++"), "solver_type": ("bh1", "bh2"),
           "timestep_spacing": ("linspace", "leading", "trailing")}
ORDERS = {name: (1, 2, 3) for name in ("dpm-solver++", "unipc", "deis", "flow-dpm-solver++", "flow-unipc")}


def check_scheduler_options(name: str) -> Callable[[dict[str, Any]], None]:
    """The option check of sampler ``name``: solver orders and named choices the scheduler accepts."""
    def check(options: dict[str, Any]) -> None:
        if "order" in options:
            order = options["order"]
            if isinstance(order, bool) or order not in ORDERS[name]:
                raise ValueError(f"order={order!r}: {name} takes a solver order of "
                                 f"{', '.join(map(str, ORDERS[name]))}")
        for key, allowed in CHOICES.items():
            if key in options and options[key] not in allowed:
                raise ValueError(f"{key}={options[key]!r}: expected one of {', '.join(allowed)}")
        if "s_churn" in options and not options["s_churn"] >= 0:
            raise ValueError(f"s_churn={options['s_churn']}: expected a number >= 0 (0: deterministic Euler)")
        if "shift" in options and not options["shift"] > 0:
            raise ValueError(f"shift={options['shift']}: expected a number > 0 (1: SiT's own time grid)")
    return check


def make_scheduler(name: str, steps: int | str, device: torch.device | str | None = None, **options: Any) -> Any:
    """The diffusers scheduler of sampler ``name`` on the model's schedule (DiT's betas, or SiT's linear path),
    its timesteps set for ``steps`` on ``device``."""
    import diffusers

    check_scheduler_options(name)(options)
    config = {RENAMED.get(k, k): v for k, v in options.items() if k not in STEP_OPTIONS}
    if name in FLOW_SCHEDULERS:
        cls = getattr(diffusers, FLOW_SCHEDULERS[name])
        multistep = "use_flow_sigmas" in inspect.signature(cls.__init__).parameters
        if "shift" in config and multistep:
            config["flow_shift"] = config.pop("shift")
        scheduler = cls(num_train_timesteps=NUM_TRAIN_TIMESTEPS, **(FLOW_SIGMAS if multistep else {}), **config)
    else:
        scheduler = getattr(diffusers, SCHEDULERS[name])(**MODEL_SCHEDULE, **config)
    scheduler.set_timesteps(parse_steps(steps, name, 1), device=device)
    return scheduler


def _timesteps(name: str) -> Callable[..., list[float]]:
    def timesteps(steps: str | int, **options: Any) -> list[float]:
        """The network times visited (descending, each once)."""
        scheduler = make_scheduler(name, steps, **options)
        return sorted({float(t) for t in network_times(name, scheduler)}, reverse=True)
    return timesteps


def network_times(name: str, scheduler: Any) -> torch.Tensor:
    """(len(timesteps),) the time the network is called at, per step: the DDPM timestep, or SiT time 1 - sigma."""
    if name in FLOW_SCHEDULERS:
        return 1.0 - scheduler.sigmas[: len(scheduler.timesteps)].double()
    return scheduler.timesteps


def _vp_data(scheduler: Any, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0 estimate (x - sqrt(1 - abar_t) eps) / sqrt(abar_t) at an integer step t (variance-preserving x)."""
    abar = scheduler.alphas_cumprod[int(round(float(t)))].to(x)
    return (x - (1 - abar).sqrt() * eps) / abar.sqrt()


def run_scheduler(name: str, denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor,
                  steps: int | str, step_noise: PerSampleNoise | None, callback: StepCallback | None,
                  clip_denoised: bool, progress: bool, options: dict[str, Any]) -> torch.Tensor:
    """diffusers' sampling loop (as its DiTPipeline) with ``denoiser`` (guided or not) as the network."""
    scheduler = make_scheduler(name, steps, noise.device, **options)
    step_kwargs = {k: v for k, v in options.items() if k in STEP_OPTIONS}
    if "generator" in inspect.signature(scheduler.step).parameters:  # a stochastic step: per-sample noise
        step_kwargs["generator"] = list(step_noise.generators) if step_noise is not None else None
    channels, flow = noise.shape[1], name in FLOW_SCHEDULERS
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # (N, C, H, W)
    times = network_times(name, scheduler)
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc=f"{name} sampling", leave=False)):
        x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        tt = times[i].to(device=x.device, dtype=torch.float32 if flow else times.dtype).expand(x.shape[0])  # (N,)
        pred = denoiser(x_in, tt, labels)[:, :channels].to(x.dtype)  # the learned-variance half dropped
        # diffusers' flow prediction is d x / d sigma = noise - data: minus SiT's velocity d x / d t
        out = scheduler.step(-pred if flow else pred, t, x, **step_kwargs)
        if callback is not None:
            denoised = getattr(out, "pred_original_sample", None)
            if denoised is None:
                denoised = velocity_to_data(pred, x, tt) if flow else _vp_data(scheduler, x, pred, t)
            callback({"i": i, "t": tt, "x": x, "x_next": out.prev_sample, "denoised": denoised})
        x = out.prev_sample
    return x.clamp(-1, 1) if clip_denoised else x


def _register(name: str, help: str) -> Callable:
    flow = name in FLOW_SCHEDULERS
    return register_sampler(name, predictions=FLOW if flow else EPS, timesteps=_timesteps(name),
                            time_range=(0.0, 1.0) if flow else (0, NUM_TRAIN_TIMESTEPS - 1), help=help,
                            check_options=check_scheduler_options(name))


@_register("dpm-solver++", "diffusers DPMSolverMultistepScheduler (DPM-Solver++ 2M; order=3: 3M; "
           "algorithm_type=sde-dpmsolver++: stochastic), 15-25 steps")
def dpm_solver_pp(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *,
                  steps: int | str = 20, step_noise: PerSampleNoise | None = None,
                  callback: StepCallback | None = None, order: int = 2, algorithm_type: str = "dpmsolver++",
                  use_karras_sigmas: bool = False, timestep_spacing: str = "linspace", clip_denoised: bool = False,
                  progress: bool = False) -> torch.Tensor:
    """DPM-Solver++ multistep over ``steps`` steps (one network evaluation each)."""
    options = {"order": order, "algorithm_type": algorithm_type, "use_karras_sigmas": use_karras_sigmas,
               "timestep_spacing": timestep_spacing}
    return run_scheduler("dpm-solver++", denoiser, noise, labels, steps, step_noise, callback, clip_denoised,
                         progress, options)


@_register("unipc", "diffusers UniPCMultistepScheduler (predictor-corrector, order 2 by default)")
def unipc(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 20,
          step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, order: int = 2,
          solver_type: str = "bh2", use_karras_sigmas: bool = False, timestep_spacing: str = "linspace",
          clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """UniPC multistep over ``steps`` steps (one network evaluation each)."""
    options = {"order": order, "solver_type": solver_type, "use_karras_sigmas": use_karras_sigmas,
               "timestep_spacing": timestep_spacing}
    return run_scheduler("unipc", denoiser, noise, labels, steps, step_noise, callback, clip_denoised, progress,
                         options)


@_register("deis", "diffusers DEISMultistepScheduler (order 2 by default)")
def deis(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 20,
         step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, order: int = 2,
         use_karras_sigmas: bool = False, timestep_spacing: str = "linspace", clip_denoised: bool = False,
         progress: bool = False) -> torch.Tensor:
    """DEIS multistep over ``steps`` steps (one network evaluation each)."""
    options = {"order": order, "use_karras_sigmas": use_karras_sigmas, "timestep_spacing": timestep_spacing}
    return run_scheduler("deis", denoiser, noise, labels, steps, step_noise, callback, clip_denoised, progress,
                         options)


@_register("euler", "diffusers EulerDiscreteScheduler (s_churn > 0: stochastic, Karras et al.'s churn)")
def euler(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 50,
          step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None,
          use_karras_sigmas: bool = False, timestep_spacing: str = "linspace", s_churn: float = 0.0,
          clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """Euler in sigma (k-diffusion's sample_euler) over ``steps`` steps (one network evaluation each)."""
    options = {"use_karras_sigmas": use_karras_sigmas, "timestep_spacing": timestep_spacing, "s_churn": s_churn}
    return run_scheduler("euler", denoiser, noise, labels, steps, step_noise, callback, clip_denoised, progress,
                         options)


@_register("heun", "diffusers HeunDiscreteScheduler (2nd order, 2 evaluations per step but the last)")
def heun(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 25,
         step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None,
         use_karras_sigmas: bool = False, timestep_spacing: str = "linspace", clip_denoised: bool = False,
         progress: bool = False) -> torch.Tensor:
    """Heun in sigma over ``steps`` steps (``2 steps - 1`` network evaluations)."""
    options = {"use_karras_sigmas": use_karras_sigmas, "timestep_spacing": timestep_spacing}
    return run_scheduler("heun", denoiser, noise, labels, steps, step_noise, callback, clip_denoised, progress,
                         options)


# ---- velocity (SiT) models: the flow-matching path, network called at SiT time t = 1 - sigma ---------------------

@_register("flow-dpm-solver++", "diffusers DPMSolverMultistepScheduler on the flow path (use_flow_sigmas), "
           "velocity models")
def flow_dpm_solver_pp(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *,
                       steps: int | str = 20, step_noise: PerSampleNoise | None = None,
                       callback: StepCallback | None = None, order: int = 2, algorithm_type: str = "dpmsolver++",
                       shift: float = 1.0, clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++ multistep in sigma = 1 - t over ``steps`` steps (one network evaluation each)."""
    options = {"order": order, "algorithm_type": algorithm_type, "shift": shift}
    return run_scheduler("flow-dpm-solver++", denoiser, noise, labels, steps, step_noise, callback, clip_denoised,
                         progress, options)


@_register("flow-unipc", "diffusers UniPCMultistepScheduler on the flow path (use_flow_sigmas), velocity models")
def flow_unipc(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 20,
               step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, order: int = 2,
               solver_type: str = "bh2", shift: float = 1.0, clip_denoised: bool = False,
               progress: bool = False) -> torch.Tensor:
    """UniPC multistep in sigma = 1 - t over ``steps`` steps (one network evaluation each)."""
    options = {"order": order, "solver_type": solver_type, "shift": shift}
    return run_scheduler("flow-unipc", denoiser, noise, labels, steps, step_noise, callback, clip_denoised, progress,
                         options)


@_register("flow-euler", "diffusers FlowMatchEulerDiscreteScheduler (SD3 / Flux's), velocity models")
def flow_euler(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 50,
               step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, shift: float = 1.0,
               clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """Euler in sigma from 1 to 0 over ``steps`` steps (one network evaluation each)."""
    return run_scheduler("flow-euler", denoiser, noise, labels, steps, step_noise, callback, clip_denoised, progress,
                         {"shift": shift})


@_register("flow-heun", "diffusers FlowMatchHeunDiscreteScheduler, velocity models (2 evaluations per step but the "
           "last)")
def flow_heun(denoiser: PredictingDenoiser, noise: torch.Tensor, labels: torch.Tensor, *, steps: int | str = 25,
              step_noise: PerSampleNoise | None = None, callback: StepCallback | None = None, shift: float = 1.0,
              clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """Heun in sigma from 1 to 0 over ``steps`` steps (``2 steps - 1`` network evaluations)."""
    return run_scheduler("flow-heun", denoiser, noise, labels, steps, step_noise, callback, clip_denoised, progress,
                         {"shift": shift})
