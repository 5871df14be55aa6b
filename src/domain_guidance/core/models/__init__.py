"""DiT backbone and its configuration."""
from .config import SIZES, DiTConfig, dit_config
from .dit import DiT

__all__ = ["DiT", "DiTConfig", "SIZES", "dit_config"]
