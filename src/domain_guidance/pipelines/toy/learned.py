"""The learned track: a small MLP eps-denoiser, pre-trained on the source, fine-tuned on a few points.

Mirrors the image pipeline: pre-training with label dropout (null label = number of source
classes); fine-tuning copies every weight except the label table, which is replaced by a fresh
``K + 1`` table (N(0, 0.02)), and trains with label dropout so CFG has an unconditional branch;
DoG takes the unconditional branch from the frozen pre-trained network at its own null label.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...core.diffusion import create_diffusion


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """DiT/ADM sinusoidal embedding of original timesteps t (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.cond = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """h: (N, H) features, cond: (N, H) = self.cond(c) of the point's (t, label) embedding c."""
        return h + self.fc2(F.silu(self.fc1(h) + cond))


class ToyMLP(nn.Module):
    """eps(x, t, y) for 2-D points; label ``num_classes`` is the null label.

    In train mode labels are replaced by the null label with probability ``label_dropout``
    (inside the model, as in DiT).
    """

    def __init__(self, num_classes: int, hidden: int = 64, depth: int = 3, label_dropout: float = 0.1,
                 freq_dim: int = 64):
        super().__init__()
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.freq_dim = freq_dim
        self.inp = nn.Linear(2, hidden)
        self.t_mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_table = nn.Embedding(num_classes + 1, hidden)
        nn.init.normal_(self.label_table.weight, std=0.02)
        self.blocks = nn.ModuleList(ResBlock(hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, 2)

    def reset_labels(self, num_classes: int) -> None:
        """Fresh ``num_classes + 1`` label table (the fine-tuning surgery); other weights stay."""
        hidden = self.label_table.embedding_dim
        self.num_classes = num_classes
        self.label_table = nn.Embedding(num_classes + 1, hidden)
        nn.init.normal_(self.label_table.weight, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: (N, 2), t: (N,) original steps, labels: (N,) -> eps (N, 2)."""
        if self.training and self.label_dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        # the conditioning depends only on (t, label): compute it once per distinct pair
        # (a sampling step has at most a few), then gather per point
        key = t.long() * (self.num_classes + 1) + labels.long()
        uniq, inv = torch.unique(key, return_inverse=True)
        tu, lu = uniq // (self.num_classes + 1), uniq % (self.num_classes + 1)
        c = F.silu(self.t_mlp(timestep_embedding(tu, self.freq_dim)) + self.label_table(lu))   # (U, H)
        h = self.inp(x)                                                                          # (N, H)
        for block in self.blocks:
            h = block(h, block.cond(c)[inv])
        return self.out(F.silu(h))


class MLPDenoiser:
    """DenoiserLike wrapper of a ToyMLP (eval mode, float32 network, output in the input's dtype)."""

    def __init__(self, net: ToyMLP, name: str = "mlp"):
        self.net = net.eval()  # eval(): label dropout would otherwise fire
        self.name = name
        self.null_label: int | None = net.num_classes
        self.data_channels = 2
        self.prediction, self.learn_sigma = "eps", False

    def input_space(self) -> dict:
        return {"space": "toy-plane", "dim": 2}

    def same_network(self, other) -> bool:
        return isinstance(other, MLPDenoiser) and other.net is self.net

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        bad = (labels < 0) | (labels > self.net.num_classes)
        if bad.any():
            raise ValueError(f"label {int(labels[bad][0])} out of range for {self.name!r}: expected "
                             f"0..{self.net.num_classes - 1} or the null label {self.net.num_classes}")
        return self.net(x.float(), t, labels).to(x.dtype)


def train_denoiser(net: ToyMLP, draw_batch: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
                   steps: int, batch: int, lr: float, seed: int) -> list[float]:
    """Train ``net`` on the eps MSE of core's diffusion; ``draw_batch(n, gen) -> (x0, labels)``.

    Returns the loss every step (for the log). The optimizer is Adam with a constant rate after
    a short warm-up, plus a cosine decay over the last half (quick convergence on a CPU).
    """
    diffusion = create_diffusion("", learn_sigma=False)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # label dropout inside the model uses the global RNG
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    warmup = max(1, steps // 20)

    def lr_at(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        half = steps // 2
        return 1.0 if i < half else 0.5 * (1 + math.cos(math.pi * (i - half) / max(1, steps - half)))

    net.train()
    losses = []
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_at(i)
        x0, labels = draw_batch(batch, gen)
        x0 = x0.float()
        t = torch.randint(0, diffusion.num_timesteps, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = diffusion.q_sample(x0, t, noise)
        loss = diffusion.training_losses(net(x_t, t, labels), x0, x_t, t, noise)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses


def pretrain(scenario, config) -> tuple[ToyMLP, list[float]]:
    """MLP trained on fresh draws of the source mixture (labels = source classes)."""
    torch.manual_seed(config.train_seed)
    net = ToyMLP(scenario.num_source_classes, config.hidden, config.depth, config.label_dropout)

    def draw(n: int, gen: torch.Generator):
        return scenario.source.sample(n, gen)  # one component per source class: component = class

    losses = train_denoiser(net, draw, config.pretrain_steps, config.pretrain_batch, config.pretrain_lr,
                            config.train_seed)
    return net, losses


def finetune(pretrained: ToyMLP, scenario, config, seed: int) -> tuple[ToyMLP, list[float]]:
    """Copy of ``pretrained`` with a fresh K+1 label table, trained on the real target points."""
    torch.manual_seed(seed)
    net = copy.deepcopy(pretrained)
    net.reset_labels(scenario.num_target_classes)
    net.label_dropout = config.label_dropout
    real_x, real_y = scenario.real_x.float(), scenario.real_y

    def draw(n: int, gen: torch.Generator):
        idx = torch.randint(0, len(real_x), (n,), generator=gen)
        return real_x[idx], real_y[idx]

    losses = train_denoiser(net, draw, config.finetune_steps, config.finetune_batch, config.finetune_lr, seed)
    return net, losses
