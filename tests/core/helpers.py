"""Tiny models shared by the core tests."""
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
