"""Tiny models shared by the core tests."""
import math

import torch

from domain_guidance.core.models import DiT, dit_config


def tiny_dit(num_classes: int = 10, seed: int = 0, std: float = 0.02, **overrides) -> DiT:
    """A hidden-64, depth-2 DiT with random (non-zero) weights so outputs depend on every input."""
    overrides.setdefault("input_size", 8)
    cfg = dit_config("T/2", num_classes=num_classes, **overrides)
    torch.manual_seed(seed)
    net = DiT(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.normal_(0, std)
    return net.eval()


def rounding_stages(cfg) -> int:
    """Dependent float32 rounding stages on a DiT's longest path, input to output.

    Embeddings 5 (patch conv; timestep sin/cos, linear, SiLU, linear; + label). Per block 14:
    SiLU + adaLN linear, LayerNorm + modulate, qkv, q.k, softmax, attn.v, proj, gated residual,
    LayerNorm + modulate, fc1, GELU, fc2, gated residual. Final layer 4: SiLU + adaLN linear,
    LayerNorm + modulate, linear.
    """
    return 5 + 14 * cfg.depth + 4


def fp32_rounding_bound(cfg, scale: float, passes: int = 1) -> float:
    """How far (absolute) a float32 evaluation of a DiT may sit from the exact result, whatever order
    of summation, blocking or fusion the kernels or a compiler choose (all legal in float32).

    Each rounding stage adds a relative error of about eps * sqrt(K): a sum of K terms rounded in any
    order drifts like a random walk of K steps of eps/2 (Higham & Mary 2019, probabilistic bound with
    lambda = 2), with K the longest reduction (fc2's, hidden * mlp_ratio). The stages' errors add at
    most linearly (``rounding_stages``), relative to the output's ``scale`` (max |output|): LayerNorm
    brings every block's input back to unit scale, so no stage works on numbers much larger than the
    output. ``passes`` network evaluations in sequence (a sampler's steps) add theirs.
    The tests that use it also check that the eager float32 result against float64 stays within it.
    """
    k = int(cfg.hidden_size * cfg.mlp_ratio)
    return passes * rounding_stages(cfg) * torch.finfo(torch.float32).eps * math.sqrt(k) * scale


def sampling_rounding_bound(cfg, scale: float, steps: int, w: float) -> float:
    """How far (absolute) a float32 sampling run may sit from the exact one: ``steps`` guided evaluations
    in sequence, each within ``fp32_rounding_bound`` of its exact value (``scale``: max |image|).
    Guidance ``u + w (c - u)`` weighs the two networks' errors by |1 - w| + |w|; a DDPM/DDIM update
    weighs the prediction by less than 1, so the steps' errors add at most linearly. A worst case:
    seen differences are ~1e-6 of the scale."""
    return fp32_rounding_bound(cfg, scale, passes=steps) * (abs(1 - w) + abs(w))
