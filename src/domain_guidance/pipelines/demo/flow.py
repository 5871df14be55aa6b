"""The flow-matching variant of ``dog demo`` (``--flow``): its source, sampler budget and guidance interval.

The same benchmark under flow matching (SiT: linear path, velocity prediction, t = 0 noise, t = 1 data):
a velocity source model (``animal-source-flow``), a velocity fine-tune (the target preset keeps the
source's prediction), and an ODE sampler whose network evaluations match the eps demo's DDIM budget.
The DoG interval row is moved to SiT time at equal signal-to-noise ratio.
"""
from __future__ import annotations

import math
from pathlib import Path

from ...io.checkpoints import load_model

# Shipped flow source (see assets/README.md): `dog finetune --preset animal-source-flow`, EMA weights.
SHIPPED_FLOW_SOURCE = Path(__file__).resolve().parents[2] / "assets" / "animal-source-flow.safetensors"
FLOW_SOURCE_PRESET = "animal-source-flow"
FLOW_SAMPLER = "ode-heun"  # 2nd order, 2 network evaluations per step
EVALS_PER_STEP = {"ode-euler": 1, "ode-heun": 2, "ddim": 1, "ddpm": 1, "sde-euler": 1}
# DDPM's linear schedule (DiT / ADM): beta_t from 1e-4 to 0.02 over 1000 steps
DDPM_STEPS, BETA_START, BETA_END = 1000, 1e-4, 0.02


def default_flow_source() -> str:
    """The shipped flow source if present, else the run directory its preset trains into."""
    return str(SHIPPED_FLOW_SOURCE) if SHIPPED_FLOW_SOURCE.is_file() else "runs/animal-source-flow"


def matched_steps(eps_steps: int, sampler: str = FLOW_SAMPLER) -> int:
    """Steps of ``sampler`` with (about) the network evaluations of ``eps_steps`` DDIM steps (Heun: half)."""
    per = EVALS_PER_STEP.get(sampler)
    if per is None:
        raise ValueError(f"sampler {sampler!r}: no fixed evaluations per step; "
                         f"expected one of {sorted(EVALS_PER_STEP)}")
    return max(1, eps_steps // per)


def ddpm_alpha_bar(timestep: int) -> float:
    """alpha_bar of DDPM's linear schedule at an original timestep 0..999."""
    if not 0 <= timestep < DDPM_STEPS:
        raise ValueError(f"timestep must be an original DDPM step 0..{DDPM_STEPS - 1}, got {timestep}")
    out = 1.0
    for i in range(timestep + 1):
        out *= 1.0 - (BETA_START + (BETA_END - BETA_START) * i / (DDPM_STEPS - 1))
    return out


def sit_time_of_ddpm(timestep: int) -> float:
    """SiT time with the signal-to-noise ratio of DDPM step ``timestep``.

    DDPM: x = sqrt(ab) x0 + sqrt(1 - ab) eps; SiT's linear path: x = t x1 + (1 - t) eps, so equal
    SNR means t / (1 - t) = sqrt(ab / (1 - ab)), i.e. t = s / (s + n) with s = sqrt(ab), n = sqrt(1 - ab).
    """
    ab = ddpm_alpha_bar(timestep)
    s, n = math.sqrt(ab), math.sqrt(1.0 - ab)
    return s / (s + n)


def flow_interval(ddpm_interval: list[float]) -> list[float]:
    """A DDPM interval [lo, hi] of the eps demo as the SiT-time interval of the same noise levels, rounded to 0.01.

    The noisy end maps to SiT t = 0 (where the flow samplers start) when ``hi`` is DDPM's last step 999.
    """
    lo, hi = ddpm_interval
    t_lo = 0.0 if hi >= DDPM_STEPS - 1 else sit_time_of_ddpm(int(round(hi)))
    return [round(t_lo, 2), round(sit_time_of_ddpm(int(round(lo))), 2)]


def source_prediction(checkpoint: str | Path) -> str:
    """What a source checkpoint predicts ("eps" or "velocity"), from its stored config."""
    return load_model(checkpoint).config.prediction


def check_source_prediction(checkpoint: str | Path, expected: str) -> str:
    """The checkpoint's prediction; a ValueError naming both when it is not ``expected``."""
    got = source_prediction(checkpoint)
    if got != expected:
        variant = "--flow (flow matching)" if expected == "velocity" else "the eps (DiT) demo"
        fix = (f"pass a velocity source (the shipped {SHIPPED_FLOW_SOURCE.name}, or --pretrain to train the "
               f"{FLOW_SOURCE_PRESET!r} preset)" if expected == "velocity"
               else "drop --source, or run the flow variant with --flow")
        raise ValueError(f"source model {checkpoint} predicts {got!r}, but {variant} needs a {expected!r} source; "
                         f"{fix}")
    return got
