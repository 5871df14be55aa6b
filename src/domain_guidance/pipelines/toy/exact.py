"""Closed-form Gaussian mixtures and their noisy epsilon at every diffusion step (float64).

Noising N(mu, S) to step t (alpha_bar = ab) gives N(sqrt(ab) mu, ab S + (1 - ab) I), so a
mixture stays a mixture with the same weights. Its noisy score is the responsibility-weighted
sum of the component scores (responsibilities from logsumexp), and the epsilon that a perfect
network would predict is ``eps = -sqrt(1 - ab) * score``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...core.diffusion import create_diffusion

_F64 = torch.float64


def _alphas_cumprod() -> torch.Tensor:
    """(1000,) float64 alpha_bar of the ORIGINAL (unspaced) linear schedule."""
    return torch.from_numpy(create_diffusion("", learn_sigma=False).alphas_cumprod.copy())


ALPHAS_CUMPROD = _alphas_cumprod()


@dataclass(eq=False)
class GaussianMixture:
    """Mixture of full-covariance Gaussians in D dimensions.

    means: (M, D), covs: (M, D, D), weights: (M,) summing to one; all float64.
    """

    means: torch.Tensor
    covs: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self) -> None:
        self.means = torch.as_tensor(self.means, dtype=_F64)
        self.covs = torch.as_tensor(self.covs, dtype=_F64)
        self.weights = torch.as_tensor(self.weights, dtype=_F64)
        m, d = self.means.shape
        if self.covs.shape != (m, d, d) or self.weights.shape != (m,):
            raise ValueError(f"mixture shapes disagree: means {tuple(self.means.shape)}, covs "
                             f"{tuple(self.covs.shape)}, weights {tuple(self.weights.shape)}")
        if not torch.isclose(self.weights.sum(), torch.tensor(1.0, dtype=_F64)):
            raise ValueError(f"mixture weights must sum to 1, got {float(self.weights.sum())}")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @staticmethod
    def isotropic(means, stds, weights=None) -> "GaussianMixture":
        """Components N(means[m], stds[m]^2 I); equal weights unless given."""
        means = torch.as_tensor(np.asarray(means, dtype=np.float64))
        m, d = means.shape
        stds = torch.as_tensor(np.broadcast_to(np.asarray(stds, dtype=np.float64), (m,)).copy())
        covs = stds[:, None, None] ** 2 * torch.eye(d, dtype=_F64)
        w = torch.full((m,), 1.0 / m, dtype=_F64) if weights is None else torch.as_tensor(weights, dtype=_F64)
        return GaussianMixture(means, covs, w)

    @staticmethod
    def concat(parts: list["GaussianMixture"], part_weights=None) -> "GaussianMixture":
        """The mixture sum_k part_weights[k] * parts[k] (equal part weights unless given)."""
        k = len(parts)
        pw = [1.0 / k] * k if part_weights is None else list(part_weights)
        return GaussianMixture(torch.cat([p.means for p in parts]), torch.cat([p.covs for p in parts]),
                               torch.cat([p.weights * w for p, w in zip(parts, pw)]))

    def noised(self, alpha_bar: float) -> "GaussianMixture":
        """Law of sqrt(ab) x0 + sqrt(1 - ab) eps for x0 from this mixture."""
        ab = float(alpha_bar)
        cache = self.__dict__.setdefault("_noised", {})   # samplers revisit the same steps many times
        if ab not in cache:
            eye = torch.eye(self.dim, dtype=_F64)
            cache[ab] = GaussianMixture(math.sqrt(ab) * self.means, ab * self.covs + (1.0 - ab) * eye, self.weights)
        return cache[ab]

    @property
    def shared_cov(self) -> bool:
        """True when every component has the same covariance (a faster, matmul-only path)."""
        if not hasattr(self, "_shared"):
            self._shared = bool(torch.equal(self.covs, self.covs[:1].expand_as(self.covs)))
        return self._shared

    @property
    def precisions(self) -> torch.Tensor:
        """(M, D, D) inverse covariances (computed once)."""
        if "_prec" not in self.__dict__:
            self._prec = torch.linalg.inv(self.covs)
            self._logdet = torch.linalg.slogdet(self.covs)[1]
        return self._prec

    @property
    def logdets(self) -> torch.Tensor:
        """(M,) log-determinants of the covariances."""
        self.precisions  # noqa: B018 (fills the cache)
        return self._logdet

    def _log_terms(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> log(w_m N(x; mu_m, S_m)) (N, M)."""
        x = x.to(_F64)
        if self.shared_cov:
            prec = self.precisions[0]                                      # (D, D)
            xp, mp = x @ prec, self.means @ prec                            # (N, D), (M, D)
            maha = (xp * x).sum(1, keepdim=True) - 2 * xp @ self.means.T + (mp * self.means).sum(1)[None]
        else:
            diff = x[:, None, :] - self.means[None]                        # (N, M, D)
            maha = torch.einsum("nmi,mij,nmj->nm", diff, self.precisions, diff)
        logn = -0.5 * (maha + self.logdets[None] + self.dim * math.log(2 * math.pi))
        return torch.log(self.weights)[None] + logn

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) log density."""
        return torch.logsumexp(self._log_terms(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) gradient of the log density: -sum_m r_m(x) S_m^{-1} (x - mu_m)."""
        x = x.to(_F64)
        resp = torch.softmax(self._log_terms(x), dim=1)                    # (N, M), logsumexp-stable
        if self.shared_cov:
            return -(x - resp @ self.means) @ self.precisions[0].T
        diff = x[:, None, :] - self.means[None]                            # (N, M, D)
        prec_diff = torch.einsum("mij,nmj->nmi", self.precisions, diff)
        return -(resp[..., None] * prec_diff).sum(1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws (n, D) and the component each came from (n,)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=_F64, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[comp] + (chol[comp] @ z[..., None])[..., 0], comp


def noisy_eps(mixture: GaussianMixture, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact eps of the noised mixture: x (N, D) at ORIGINAL steps t (N,) -> (N, D) float64."""
    x = x.to(_F64)
    out = torch.empty_like(x)
    ab_table = ALPHAS_CUMPROD
    for step in torch.unique(t).tolist():                               # one value during sampling
        rows = t == step
        ab = float(ab_table[int(step)])
        out[rows] = -math.sqrt(1.0 - ab) * mixture.noised(ab).score(x[rows])
    return out


class ExactDenoiser:
    """A "perfect network": closed-form eps of one mixture per label (DenoiserLike).

    ``conditionals[k]`` is the law of class k; the label ``null_label`` (= number of classes)
    selects ``marginal``. Output has the input's dtype.
    """

    def __init__(self, conditionals: list[GaussianMixture], marginal: GaussianMixture, name: str = "exact"):
        self.conditionals = list(conditionals)
        self.marginal = marginal
        self.name = name
        self.null_label: int | None = len(self.conditionals)
        self.data_channels = marginal.dim
        self.prediction, self.learn_sigma = "eps", False

    def input_space(self) -> dict:
        return {"space": "toy-plane", "dim": self.data_channels}

    def same_network(self, other) -> bool:
        return self is other

    def mixture(self, label: int) -> GaussianMixture:
        if label == self.null_label:
            return self.marginal
        if not 0 <= label < len(self.conditionals):
            raise ValueError(f"label {label} out of range for {self.name!r}: expected 0..{len(self.conditionals) - 1} "
                             f"or the null label {self.null_label}")
        return self.conditionals[label]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: (N, D), t: (N,) original steps, labels: (N,) -> eps (N, D)."""
        out = torch.empty(x.shape, dtype=_F64, device=x.device)
        for label in torch.unique(labels).tolist():
            rows = labels == label
            out[rows] = noisy_eps(self.mixture(int(label)), x[rows], t[rows])
        return out.to(x.dtype)
