"""`dog sample` end to end on tiny checkpoints, including a 2-process torchrun run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from domain_guidance.cli import main
from domain_guidance.io.checkpoints import retarget, save_model
from tests.core.helpers import tiny_dit


def _run(checkpoints, out, *extra):
    method = extra[extra.index("--method") + 1] if "--method" in extra else "dog"
    guide = ["--guide", str(checkpoints / "pre")] if method == "dog" else []  # --guide is DoG's only
    return main(["sample", "--model", str(checkpoints / "ft"), *guide,
                 "--seeds", "0-5", "--steps", "4", "--shard-size", "2", "--out", str(out), "--no-progress", *extra])


def _arr(path):
    with np.load(path) as z:
        return z["arr_0"], z["labels"]


def test_sample_writes_grid_npz_and_settings(checkpoints, tmp_path):
    assert _run(checkpoints, tmp_path / "dog", "--png") == 0
    images, labels = _arr(tmp_path / "dog" / "samples.npz")
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]
    record = json.loads((tmp_path / "dog" / "settings.json").read_text())
    settings = record["settings"]
    assert settings["method"] == "dog" and settings["scale"] == 1.5 and settings["clip_denoised"] is True
    assert record["models"]["guide"]["config"]["num_classes"] == 10 and record["status"] == "complete"
    assert record["models"]["model"]["sha256"] != record["models"]["guide"]["sha256"]
    assert len(list((tmp_path / "dog" / "images").glob("*.png"))) == 6
    assert (tmp_path / "dog" / "grid.png").exists()
    # CFG and unguided give different images from the same seeds
    assert _run(checkpoints, tmp_path / "cfg", "--method", "cfg") == 0
    assert not np.array_equal(_arr(tmp_path / "cfg" / "samples.npz")[0], images)


def test_sample_errors(checkpoints, tmp_path, capsys):
    assert main(["sample", "--model", str(checkpoints / "ft"), "--out", str(tmp_path)]) == 2
    assert "DoG needs the pre-trained model as guide: pass --guide" in capsys.readouterr().err
    assert _run(checkpoints, tmp_path, "--labels", "7") == 2
    assert "--labels: 7 is out of range; the model has classes 0..2" in capsys.readouterr().err
    assert _run(checkpoints, tmp_path, "--scale", "nan") == 2
    assert "finite" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_write_the_same_files(checkpoints, tmp_path):
    assert _run(checkpoints, tmp_path / "one") == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "domain_guidance.cli", "sample", "--model", str(checkpoints / "ft"), "--guide",
           str(checkpoints / "pre"), "--seeds", "0-5", "--steps", "4", "--shard-size", "2",
           "--out", str(tmp_path / "two"), "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, timeout=180, env=env, capture_output=True)
    a, b = _arr(tmp_path / "one" / "samples.npz"), _arr(tmp_path / "two" / "samples.npz")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_latent_model_decodes_through_the_vae(tiny_vae_dir, tmp_path):
    pre = tiny_dit(num_classes=10, seed=1, in_channels=4, latent=True, vae=str(tiny_vae_dir))
    save_model(tmp_path / "pre", pre, pre.config)
    ft, ft_cfg = retarget(pre, pre.config, num_classes=3, seed=5)
    save_model(tmp_path / "ft", ft, ft_cfg)
    code = main(["sample", "--model", str(tmp_path / "ft"), "--guide", str(tmp_path / "pre"), "--seeds", "0-2",
                 "--steps", "3", "--out", str(tmp_path / "out"), "--no-progress", "--method", "dog"])
    assert code == 0
    images, _ = _arr(tmp_path / "out" / "samples.npz")
    assert images.shape == (3, 16, 16, 3)  # 8x8x4 latents decoded by the 2x VAE to RGB
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())["settings"]
    assert settings["clip_denoised"] is False  # latents are not clipped (as DiT)
