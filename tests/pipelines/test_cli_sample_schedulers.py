"""`dog sample --sampler dpm-solver++` (a wrapped diffusers scheduler) end to end: the images of the Python API,
the scheduler and its options recorded and part of the settings key, a bad option refused in one line."""
from __future__ import annotations

import json

import numpy as np
import torch

from domain_guidance.cli import main
from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.checkpoints import load_model


def _sample(checkpoints, out, *extra: str) -> int:
    return main(["sample", "--model", str(checkpoints / "ft"), "--guide", str(checkpoints / "pre"), "--seeds", "0-3",
                 "--steps", "6", "--sampler", "dpm-solver++", "--scale", "2", "--out", str(out), "--no-progress",
                 "--device", "cpu", *extra])


def test_dpm_solver_through_the_cli_equals_the_api_and_keys_its_options(checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sample(checkpoints, out, "--sampler-option", "order=3", "--interval", "0,600") == 0
    record = json.loads((out / "settings.json").read_text())["settings"]
    assert record["sampler"] == "dpm-solver++" and record["options"] == {"order": 3}
    with np.load(out / "samples.npz") as z:
        images = z["arr_0"]  # (4, 8, 8, 1) uint8
    ft, pre = load_model(checkpoints / "ft"), load_model(checkpoints / "pre")
    g = build_guided_denoiser("dog", Denoiser(ft.net, ft.config), Denoiser(pre.net, pre.config), scale=2.0,
                              interval=(0.0, 600.0))
    with torch.no_grad():
        x = sample_from_seeds(g, [0, 1, 2, 3], torch.tensor([0, 1, 2, 0]), (1, 8, 8), sampler="dpm-solver++", steps=6,
                              clip_denoised=True, order=3)  # (4, 1, 8, 8)
    api = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(api.astype(int) - images.astype(int)).max() <= 1  # float rounding at a .5 boundary at most
    capsys.readouterr()
    # another order is another sample set: refused into the same folder, naming the option that changed
    assert _sample(checkpoints, out, "--sampler-option", "order=2", "--interval", "0,600") == 2
    err = capsys.readouterr().err
    assert "options" in err and "--overwrite" in err and err.count("\n") == 1
    assert _sample(checkpoints, out, "--sampler-option", "order=4") == 2
    err = capsys.readouterr().err
    assert "order=4" in err and "1, 2, 3" in err and err.count("\n") == 1
