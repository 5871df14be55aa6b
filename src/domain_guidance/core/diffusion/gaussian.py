"""Gaussian diffusion with ADM/DiT semantics (epsilon prediction, learned-range variance).

Written by hand rather than taken from diffusers: diffusers' schedulers drop the learned
variance and differ from ADM's respacing and float64 coefficient tables; we need per-step
means and variances equal to facebookresearch/DiT's ``gaussian_diffusion.py`` to float32
round-off. Coefficients are float64 tables indexed then cast to float32, exactly as ADM does.

Every method here takes the *model output* rather than the model: the sampler calls the
network (at the original timestep, see ``timestep_map``) and this class does the arithmetic.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl


def linear_betas(num_timesteps: int = 1000) -> np.ndarray:
    """ADM's linear schedule: 1e-4 .. 0.02 for 1000 steps, scaled for other step counts."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


def _extract(arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Index a float64 table at t (N,) and return float32 of shape (N, 1, ..., 1)."""
    out = torch.from_numpy(arr).to(device=t.device)[t].float()
    return out.reshape(out.shape + (1,) * (ndim - 1))


class GaussianDiffusion:
    """Discrete-time diffusion on a (possibly respaced) beta schedule.

    ``timestep_map[i]`` is the ORIGINAL timestep that spaced step ``i`` stands for: the
    network must always be called at ``timestep_map[i]``, never at ``i``.
    """

    def __init__(self, betas: np.ndarray, learn_sigma: bool = True, timestep_map: Iterable[int] | None = None,
                 sigma_small: bool = False):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.betas = betas
        self.learn_sigma = learn_sigma
        self.sigma_small = sigma_small
        self.num_timesteps = len(betas)
        self.timestep_map = torch.tensor(list(timestep_map) if timestep_map is not None else range(len(betas)),
                                         dtype=torch.long)
        if len(self.timestep_map) != self.num_timesteps:
            raise ValueError("timestep_map must have one entry per step")

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # log of the posterior variance, clipped because it is 0 at the start of the chain
        self.posterior_log_variance_clipped = (
            np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
            if len(self.posterior_variance) > 1 else np.array([])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = np.log(betas)
        # fixed variances (used when the model does not learn sigma): ADM's FIXED_LARGE / FIXED_SMALL
        if sigma_small:
            self.fixed_variance, self.fixed_log_variance = self.posterior_variance, self.posterior_log_variance_clipped
        else:
            large = np.append(self.posterior_variance[1], betas[1:])
            self.fixed_variance, self.fixed_log_variance = large, np.log(large)

    # ----- forward process -----
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) for spaced step indices t (N,)."""
        return (_extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        n = x_t.ndim
        mean = _extract(self.posterior_mean_coef1, t, n) * x_start + _extract(self.posterior_mean_coef2, t, n) * x_t
        return mean, _extract(self.posterior_variance, t, n), _extract(self.posterior_log_variance_clipped, t, n)

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        n = x_t.ndim
        return _extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t - _extract(self.sqrt_recipm1_alphas_cumprod, t, n) * eps

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        n = x_t.ndim
        return ((_extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t - pred_xstart)
                / _extract(self.sqrt_recipm1_alphas_cumprod, t, n))

    # ----- reverse process -----
    def p_mean_variance(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """Mean and variance of p(x_{t-1} | x_t) from the network output at spaced step t.

        model_output: (N, 2C, H, W) with learned sigma (eps, then v in [-1, 1] interpolating the
        log variance between the clipped posterior variance and beta), else (N, C, H, W).
        """
        c = x.shape[1]
        if self.learn_sigma:
            if model_output.shape[1] != 2 * c:
                raise ValueError(f"learned-sigma model output needs {2 * c} channels, got {model_output.shape[1]}")
            eps, var_values = torch.split(model_output, c, dim=1)
            min_log = _extract(self.posterior_log_variance_clipped, t, x.ndim)
            max_log = _extract(self.log_betas, t, x.ndim)
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            eps = model_output[:, :c]
            variance = _extract(self.fixed_variance, t, x.ndim)
            log_variance = _extract(self.fixed_log_variance, t, x.ndim)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def ddpm_step(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """One ancestral step x_t -> x_{t-1}; no noise is added at t == 0."""
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        out["sample"] = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return out

    def ddim_step(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  eta: float = 0.0, clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """One DDIM step x_t -> x_{t-1} (eta = 0: deterministic; eta = 1: DDPM-like noise)."""
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract(self.alphas_cumprod, t, x.ndim)
        alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, x.ndim)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        out["sample"] = mean_pred + nonzero * sigma * noise
        return out

    # ----- training -----
    def training_losses(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                        t: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """DiT's loss: eps MSE, plus the variational bound for the variance when sigma is learned.

        The bound only trains the variance: the eps part is detached inside it, as in ADM.
        Returns per-sample terms (N,) with keys "mse", "vb" (if learned) and "loss".
        """
        c = x_t.shape[1]
        terms: dict[str, torch.Tensor] = {}
        eps = model_output[:, :c]
        if self.learn_sigma:
            frozen = torch.cat([eps.detach(), model_output[:, c:]], dim=1)
            terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t)
        terms["mse"] = mean_flat((noise - eps) ** 2)
        terms["loss"] = terms["mse"] + terms.get("vb", 0.0)
        return terms

    def vb_terms_bpd(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """Variational bound term in bits per dimension (decoder NLL at t == 0), shape (N,)."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)
