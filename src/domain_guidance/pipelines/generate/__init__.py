"""Generation: one settings object, one builder of the guided denoiser, one road to resumable shards.

    models = load_models("runs/food/checkpoints/latest", guide="DiT-XL-2-256x256.pt")
    settings = GenerationSettings(method="dog", scale=1.5, seeds=list(range(8)), labels=balanced_labels(8, 101))
    images = sample_images(settings, models)            # in memory, (N, C, H, W) in [-1, 1]
    generate(settings, models, "samples/food-dog")      # shards + samples.npz + settings.json
"""
from .models import Models, build_denoiser, load_models, sample_images, settings_key, weights_sha256
from .settings import (MAX_SAMPLES, GenerationSettings, balanced_labels, check_seeds, parse_labels,
                       parse_seeds, sampler_options)
from .shards import SettingsMismatch, describe_differences, generate, load_samples, merge_shards

__all__ = ["Models", "build_denoiser", "load_models", "sample_images", "settings_key", "weights_sha256",
           "MAX_SAMPLES", "GenerationSettings", "balanced_labels", "check_seeds", "parse_labels", "parse_seeds",
           "sampler_options",
           "SettingsMismatch", "describe_differences", "generate", "load_samples", "merge_shards"]
