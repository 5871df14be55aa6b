"""Fine-tuning and pre-training of DiTs: full or LoRA, resumable, distributed, with EMA and sample grids.

    from domain_guidance.pipelines.training import resolve_config, train
    result = train(resolve_config("cpu-tiny", sets=["steps=50", "out=runs/demo"]))

See ``config`` (TrainConfig, presets), ``loop`` (train), ``state`` (checkpoint layout).
"""
from .config import PRESETS, DataConfig, EmaConfig, GridConfig, LoraSettings, TrainConfig, resolve_config
from .loop import NonFiniteLossError, TrainResult, train
from .state import find_latest, load_train_state

__all__ = ["PRESETS", "DataConfig", "EmaConfig", "GridConfig", "LoraSettings", "NonFiniteLossError", "TrainConfig",
           "TrainResult", "find_latest", "load_train_state", "resolve_config", "train"]
