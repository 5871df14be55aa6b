"""Domain Guidance as a diffusers guider: ``DomainGuidance``, for every pipeline that takes a guider.

diffusers' modular pipelines (Stable Diffusion XL, SD3, Flux, ...) run the denoiser once per guidance branch
between ``guider.prepare_models(denoiser)`` and ``guider.cleanup_models(denoiser)``, then combine the branch
predictions with ``guider(...)``. DoG's conditional branch is the fine-tuned model as given (the LoRA on);
its unconditional branch, at the negative prompt, is the *base* model: the same network with its adapters
(peft / diffusers LoRA) switched off, or a separate ``guide`` module of the same call signature (a full
fine-tune's pre-trained model). The combination is the package's one guidance rule
(``core.guidance.apply_guidance``); ``guidance_rescale`` and ``start`` / ``stop`` are those of diffusers'
``ClassifierFreeGuidance``.

State leaks are the risk: the pipelines call ``cleanup_models`` only when the branch returns. So the adapters
are not switched off in ``prepare_models``; a hook on the denoiser switches them off for the duration of each
forward call of the unconditional branch and back on in a ``finally``. A branch that raises therefore leaves
the adapters on, and the hook, spent, passes calls through until the next ``prepare_models`` removes it.
This module is an integration at the top of the package: nothing in ``core`` imports it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput, rescale_noise_cfg
from diffusers.hooks import HookRegistry, ModelHook

from domain_guidance.core.guidance import apply_guidance
from domain_guidance.core.models.adapters import adapter_disabled, has_adapter

__all__ = ["DomainGuidance"]

HOOK_NAME = "domain_guidance_base_branch"


class _BaseBranchHook(ModelHook):
    """Runs the denoiser's forward as the base model: adapters off (restored in ``finally``) or ``guide``."""

    def __init__(self, guide: torch.nn.Module | None) -> None:
        super().__init__()
        self.guide = guide
        self.spent = False  # set when a call raised: later calls pass through unchanged

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        forward = self.fn_ref.original_forward
        if self.spent or self.guide is module:  # guide is the model itself: its own prediction (CFG)
            return forward(*args, **kwargs)
        try:
            if self.guide is not None:
                return self.guide(*args, **kwargs)
            with adapter_disabled(module):  # peft tuner layers off, back to their state in a finally
                return forward(*args, **kwargs)
        except BaseException:
            self.spent = True
            raise


def _remove_hook(denoiser: torch.nn.Module) -> None:
    registry = getattr(denoiser, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(HOOK_NAME) is not None:
        registry.remove_hook(HOOK_NAME, recurse=False)


class DomainGuidance(BaseGuidance):
    """Domain Guidance (Zhong et al., 2025): ``uncond_base + w * (cond_finetuned - uncond_base)``.

    Args:
        guidance_scale: w (1: unguided, one branch only).
        guidance_rescale: as diffusers' CFG (Lin et al., 2023): mixes in the guided prediction rescaled to the
            conditional one's standard deviation; 0 is off.
        start, stop: fractions of the denoising steps between which guidance applies (the interval).
        guide: the pre-trained model for a full fine-tune (same call signature as the pipeline's denoiser); None
            for a LoRA fine-tune: its adapters are switched off for the unconditional branch.
        enabled: False runs the conditional branch only.
    """

    _input_predictions = ["pred_cond", "pred_uncond"]
    ignore_for_config = ["guide"]

    @register_to_config
    def __init__(self, guidance_scale: float = 5.0, guidance_rescale: float = 0.0, start: float = 0.0,
                 stop: float = 1.0, guide: torch.nn.Module | None = None, enabled: bool = True) -> None:
        super().__init__(start, stop, enabled)
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale}")
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")
        self.guidance_scale = guidance_scale
        self.guidance_rescale = guidance_rescale
        self.guide = guide

    # ---- the branches --------------------------------------------------------------------------

    def prepare_models(self, denoiser: torch.nn.Module) -> None:
        """Before a branch: the unconditional one runs the base model (adapters off, or ``guide``)."""
        self._count_prepared += 1
        _remove_hook(denoiser)  # a hook left by a branch that raised (cleanup_models never ran)
        if not (self._is_dog_enabled() and self.is_unconditional):
            return
        if self.guide is None and not has_adapter(denoiser):
            raise ValueError(f"DomainGuidance needs the base model for the unconditional branch: "
                             f"{type(denoiser).__name__} has no adapter (LoRA) to switch off; load the fine-tune "
                             "as a LoRA, or pass guide=<the pre-trained model> for a full fine-tune")
        HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(_BaseBranchHook(self.guide), HOOK_NAME)

    def cleanup_models(self, denoiser: torch.nn.Module) -> None:
        """After a branch: the denoiser is the fine-tuned model again."""
        _remove_hook(denoiser)

    # ---- inputs and combination, as diffusers' ClassifierFreeGuidance ---------------------------

    def prepare_inputs(self, data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[Any]:
        indices = [0] if self.num_conditions == 1 else [0, 1]
        return [self._prepare_batch(data, i, name) for i, name in zip(indices, self._input_predictions)]

    def prepare_inputs_from_block_state(self, data: Any, input_fields: dict[str, str | tuple[str, str]]) -> list[Any]:
        indices = [0] if self.num_conditions == 1 else [0, 1]
        return [self._prepare_batch_from_block_state(input_fields, data, i, name)
                for i, name in zip(indices, self._input_predictions)]

    def forward(self, pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None = None) -> GuiderOutput:
        """pred_cond, pred_uncond: (B, C, ...) -> the guided prediction (the conditional one outside the interval)."""
        if not self._is_dog_enabled():
            pred = pred_cond
        else:  # the one rule, over every channel: uncond + w (cond - uncond)
            pred = apply_guidance(pred_cond, pred_uncond, self.guidance_scale, data_channels=pred_cond.shape[1])
        if self.guidance_rescale > 0.0:
            pred = rescale_noise_cfg(pred, pred_cond, self.guidance_rescale)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)

    @property
    def is_conditional(self) -> bool:
        return self._count_prepared == 1  # the pipelines run the conditional batch first

    @property
    def num_conditions(self) -> int:
        return 2 if self._is_dog_enabled() else 1

    def _is_dog_enabled(self) -> bool:
        if not self._enabled or math.isclose(self.guidance_scale, 1.0):
            return False
        if self._num_inference_steps is None:
            return True
        return int(self._start * self._num_inference_steps) <= self._step < int(self._stop * self._num_inference_steps)
