"""Datasets: image folders, built-in offline sets, the latent cache; items are addressed by seeded keys."""
from .builtin import BUILTINS, ArrayImageDataset, load_builtin, load_dataset
from .common import DatasetView, ImageDataset, SampleKey, SeededKeySampler, hflip, parse_key, select_indices
from .image_folder import ImageFolderDataset, center_crop_arr, check_image
from .latent_cache import (LatentDataset, StaleCacheError, build_latent_cache, cached_latents, expected_metadata,
                           read_cache_metadata)

__all__ = [
    "BUILTINS", "ArrayImageDataset", "DatasetView", "ImageDataset", "ImageFolderDataset", "LatentDataset",
    "SampleKey", "SeededKeySampler", "StaleCacheError", "build_latent_cache", "cached_latents", "center_crop_arr",
    "check_image", "expected_metadata", "hflip", "load_builtin", "load_dataset", "parse_key", "read_cache_metadata",
    "select_indices",
]
