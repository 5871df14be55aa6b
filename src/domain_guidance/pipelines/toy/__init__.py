"""The 2-D mixture-of-Gaussians study (the paper's Figure 2): CFG vs Domain Guidance, exact and learned.

``run_toy(ToyConfig())`` runs it; ``dog toy`` is the command. See docs/toy_study.md.
"""
from .run import run_toy
from .scenario import PRESETS, ToyConfig, build_scenario, preset_config

__all__ = ["PRESETS", "ToyConfig", "build_scenario", "preset_config", "run_toy"]
