"""Timestep respacing ("250", "50", "ddim50", "10,10,5") with the map back to original steps."""
from __future__ import annotations

from .gaussian import GaussianDiffusion, linear_betas


def space_timesteps(num_timesteps: int, spec: str | int | list[int]) -> set[int]:
    """Original timesteps kept by a respacing spec (ADM semantics).

    "ddimN" keeps ``range(0, T, stride)`` with exactly N elements; "a,b,c" splits the chain into
    equal sections and takes a, b, c evenly spaced steps from each (rounded like ADM).
    """
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, str):
        if spec.startswith("ddim"):
            desired = int(spec[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {desired} evenly strided steps from {num_timesteps} ({spec!r})")
        try:
            spec = [int(x) for x in spec.split(",")]
        except ValueError:
            raise ValueError(f"bad respacing {spec!r}: expected e.g. '250', 'ddim50' or '10,10,5'") from None
    size_per, extra = divmod(num_timesteps, len(spec))
    start, steps = 0, []
    for i, count in enumerate(spec):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size} timesteps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return set(steps)


def create_diffusion(respacing: str | int | None = "", num_timesteps: int = 1000, learn_sigma: bool = True,
                     sigma_small: bool = False) -> GaussianDiffusion:
    """DiT's ``create_diffusion``: linear schedule, optionally respaced.

    An empty respacing keeps all ``num_timesteps`` steps (training). Respaced betas are
    recomputed from the kept alphas_cumprod so the marginals q(x_t | x_0) are unchanged.
    """
    base = linear_betas(num_timesteps)
    if respacing in (None, ""):
        respacing = str(num_timesteps)
    kept = space_timesteps(num_timesteps, respacing)
    alphas_cumprod = GaussianDiffusion(base, learn_sigma=learn_sigma).alphas_cumprod
    last, betas, timestep_map = 1.0, [], []
    for i, ac in enumerate(alphas_cumprod):
        if i in kept:
            betas.append(1 - ac / last)
            last = ac
            timestep_map.append(i)
    return GaussianDiffusion(betas, learn_sigma=learn_sigma, timestep_map=timestep_map, sigma_small=sigma_small)
