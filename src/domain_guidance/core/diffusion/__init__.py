"""ADM/DiT-exact Gaussian diffusion: schedule, respacing, DDPM/DDIM steps, training losses."""
from .gaussian import GaussianDiffusion, linear_betas
from .respace import create_diffusion, space_timesteps

__all__ = ["GaussianDiffusion", "create_diffusion", "linear_betas", "space_timesteps"]
