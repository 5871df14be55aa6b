"""Evaluation metrics: FID / FD_DINOv2, KID, precision-recall-density-coverage, with cached stats.

Heavy networks are imported lazily: importing this package does not load transformers.
"""
from domain_guidance.pipelines.metrics.evaluate import METRICS, available_metrics, evaluate
from domain_guidance.pipelines.metrics.extractor import FeatureExtractor
from domain_guidance.pipelines.metrics.frechet import (
    GaussianAccumulator, frechet_distance, frechet_distance_from_features, gaussian_stats,
)
from domain_guidance.pipelines.metrics.images import ImageSet, image_set_sha256, open_images
from domain_guidance.pipelines.metrics.inception import FIDInceptionV3, InceptionExtractor
from domain_guidance.pipelines.metrics.kid import kid
from domain_guidance.pipelines.metrics.prdc import prdc
from domain_guidance.pipelines.metrics.stats import (
    FeatureStats, cached_stats, compute_stats, load_stats, save_stats,
)


def __getattr__(name: str):  # lazy: DINOv2 needs transformers
    if name == "Dinov2Extractor":
        from domain_guidance.pipelines.metrics.dinov2 import Dinov2Extractor

        return Dinov2Extractor
    raise AttributeError(name)


__all__ = [
    "METRICS", "available_metrics", "evaluate", "FeatureExtractor", "GaussianAccumulator",
    "frechet_distance", "frechet_distance_from_features", "gaussian_stats", "ImageSet",
    "image_set_sha256", "open_images", "FIDInceptionV3", "InceptionExtractor", "Dinov2Extractor",
    "kid", "prdc", "FeatureStats", "cached_stats", "compute_stats", "load_stats", "save_stats",
]
