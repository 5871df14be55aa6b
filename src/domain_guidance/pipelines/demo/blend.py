"""The blended guide of the paper's qualitative nine-grid (its Figure 4): CFG | blend | DoG.

What we chose for "a blend of the two": the unconditional branch of guidance is the average of the
two unconditional predictions,

    uncond_blend(x, t) = a * finetuned(x, t, null_ft) + (1 - a) * pretrained(x, t, null_pre),  a = 0.5,

each network at its own null label; the guidance rule itself stays ``core.guidance.apply_guidance``
(``GuidedDenoiser(finetuned, BlendedUncond(...), w)``). a = 1 is CFG, a = 0 is DoG. All output
channels are averaged; with a learned variance the rule takes the variance from the conditional
branch anyway.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.denoiser import DenoiserLike, check_same_input_space


@dataclass
class BlendedUncond:
    """An unconditional branch ``(x, t, null) -> a * finetuned(x, t, null_ft) + (1 - a) * pretrained(x, t, null_pre)``.

    GuidedDenoiser calls it with labels filled with ``null_label`` (the fine-tuned model's null);
    any other label is an error, since the blend has no conditional meaning.
    """

    finetuned: DenoiserLike
    pretrained: DenoiserLike
    weight: float = 0.5  # a: the fine-tuned model's share

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.weight) <= 1.0:
            raise ValueError(f"blend weight must be in [0, 1] (1: CFG's branch, 0: DoG's), got {self.weight}")
        self.weight = float(self.weight)
        check_same_input_space(self.finetuned, self.pretrained)
        for name, d in (("fine-tuned", self.finetuned), ("pre-trained", self.pretrained)):
            if d.null_label is None:
                raise ValueError(f"the blend needs the {name} model's unconditional branch, but it has no null label")

    @property
    def null_label(self) -> int | None:
        return self.finetuned.null_label

    @property
    def data_channels(self) -> int:
        return self.finetuned.data_channels

    @property
    def prediction(self) -> str:
        return self.finetuned.prediction

    @property
    def learn_sigma(self) -> bool:
        return self.finetuned.learn_sigma

    def input_space(self) -> dict:
        return self.finetuned.input_space()

    def same_network(self, other: DenoiserLike) -> bool:
        return other is self

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W), t: (N,), labels: (N,) all the null label -> (N, out_channels, H, W)."""
        if not bool((labels == self.null_label).all()):
            raise ValueError(f"the blended guide is unconditional: expected every label to be the null label "
                             f"{self.null_label}, got {sorted(set(labels.tolist()))}")
        ft_null = torch.full_like(labels, self.finetuned.null_label)
        pre_null = torch.full_like(labels, self.pretrained.null_label)
        a = self.weight
        return a * self.finetuned(x, t, ft_null) + (1.0 - a) * self.pretrained(x, t, pre_null)
