"""One command per paper row: ``dog reproduce NAME`` (prepare -> fine-tune -> sample -> evaluate -> table row).

    cfg = resolve("food101", "published", {"source": ["food-101.tar.gz"], "base": "DiT-XL-2-256x256.pt"})
    reproduce(cfg, "runs/food101")   # resumable: rerun the same call after any interruption
"""
from .benchmarks import BENCHMARKS, PUBLISHED_AVERAGES, PUBLISHED_SOURCE, Benchmark, benchmark, describe_benchmarks
from .config import EVAL_PROTOCOLS, PRESETS, STAGES, ReproduceConfig, resolve
from .run import reproduce, train_config

__all__ = ["BENCHMARKS", "PUBLISHED_AVERAGES", "PUBLISHED_SOURCE", "Benchmark", "benchmark", "describe_benchmarks",
           "EVAL_PROTOCOLS", "PRESETS", "STAGES", "ReproduceConfig", "resolve", "reproduce", "train_config"]
