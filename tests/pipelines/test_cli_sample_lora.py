"""`dog sample` on a LoRA run directory without --guide: DoG guides with the base (adapter off)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.checkpoints import load_model, save_model
from domain_guidance.pipelines.training import resolve_config, train
from tests.core.helpers import tiny_dit

SEEDS = [0, 1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory of a 4-step LoRA fine-tune on 3 digit classes, its 8x8x1 base: 10 classes + null)."""
    root = tmp_path_factory.mktemp("lora-run")
    base = tiny_dit(num_classes=10, seed=1, in_channels=1, latent=False, hidden_size=32, depth=1, num_heads=2)
    with torch.no_grad():  # labels that move the output (random 0.02 weights barely do): guidance becomes visible
        base.y_embedder.embedding_table.weight.mul_(50)
    save_model(root / "base", base, base.config)
    run = root / "run"
    cfg = resolve_config(None, sets=[f"out={run}", "mode=lora", f"base={root / 'base'}", "data.dataset=digits",
                                     "data.classes=[7, 8, 9]", "lora.rank=4", "lr=3e-2", "steps=4", "batch_size=8",
                                     "progress=false", "tensorboard=false", "sample_every=0", "device=cpu"])
    train(cfg)
    return run, root / "base"


def _sample_cli(run: Path, out: Path, *extra: str) -> np.ndarray:
    code = main(["sample", "--model", str(run), "--seeds", "0-5", "--steps", "4", "--batch-size", "4",
                 "--out", str(out), "--no-progress", "--device", "cpu", *extra])
    assert code == 0
    with np.load(out / "samples.npz") as z:
        assert z["labels"].tolist() == [0, 1, 2, 0, 1, 2]  # class-balanced: seed index mod 3
        return z["arr_0"]  # (6, 8, 8, 1) uint8


def _sample_api(run: Path, base_path: Path, method: str) -> np.ndarray:
    """The same images through the Python API: one adapted network, the guide is it with the adapter off."""
    loaded = load_model(run)
    assert loaded.format == "lora" and loaded.base_path.resolve() == base_path.resolve()
    ft = Denoiser(loaded.net, loaded.config, adapter=True)
    guide = Denoiser(loaded.net, loaded.base_config, adapter=False)
    den = build_guided_denoiser(method, ft, guide if method == "dog" else None, scale=1.5)
    with torch.inference_mode():
        x = sample_from_seeds(den, SEEDS, torch.tensor([0, 1, 2, 0, 1, 2]), (1, 8, 8), sampler="ddpm", steps=4,
                              clip_denoised=True)  # (6, 1, 8, 8) in [-1, 1]
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_lora_run_dir_samples_dog_without_guide(lora_run, tmp_path):
    run, base_path = lora_run
    dog = _sample_cli(run, tmp_path / "dog")  # --method dog is the default; no --guide
    unguided = _sample_cli(run, tmp_path / "unguided", "--method", "unguided")
    assert dog.shape == (6, 8, 8, 1) and dog.dtype == np.uint8
    assert np.abs(dog.astype(int) - unguided.astype(int)).max() > 2  # the guide does something
    np.testing.assert_array_equal(dog, _sample_api(run, base_path, "dog"))
    np.testing.assert_array_equal(unguided, _sample_api(run, base_path, "unguided"))
    record = json.loads((tmp_path / "dog" / "settings.json").read_text())
    assert record["settings"]["method"] == "dog" and record["status"] == "complete"
