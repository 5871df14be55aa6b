"""Domain Guidance: transfer pre-trained diffusion transformers to new domains."""
__version__ = "0.1.0"
