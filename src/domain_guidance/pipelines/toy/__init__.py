"""The 2-D mixture-of-Gaussians study (the paper's Figure 2): CFG vs Domain Guidance, exact and learned.

``run_toy(ToyConfig())`` runs it; ``dog toy`` is the command. See docs/toy_study.md.
Exports are lazy so that ``config`` (used by ``dog --help``) imports without torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"run_toy": "run", "format_table": "run", "ToyConfig": "config", "PRESETS": "config",
            "preset_config": "config", "build_scenario": "scenario", "Scenario": "scenario"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
