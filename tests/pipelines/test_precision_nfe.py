"""`dog sample --precision / --compile`, and network evaluations per image (guidance interval included)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.pipelines.generate import GenerationSettings, load_models, settings_key
from tests.core.helpers import tiny_dit

STEPS = 8  # ddpm respaced to 8 steps: timesteps 999, 856, 714, 571, 428, 285, 143, 0


def _run(checkpoints, out, *extra):
    method = extra[extra.index("--method") + 1] if "--method" in extra else "dog"
    guide = ["--guide", str(checkpoints / "pre")] if method == "dog" else []  # --guide is DoG's only
    return main(["sample", "--model", str(checkpoints / "ft"), *guide, "--seeds", "0-3",
                 "--steps", str(STEPS), "--out", str(out), "--no-progress", "--device", "cpu", *extra])


def _record(out):
    return json.loads((out / "settings.json").read_text())


def _images(out):
    with np.load(out / "samples.npz") as z:
        return z["arr_0"].astype(np.int16)


@pytest.mark.parametrize("method, extra, expected", [
    ("unguided", [], {"model": STEPS, "total": STEPS}),
    ("cfg", [], {"model": 2 * STEPS, "total": 2 * STEPS}),  # both halves are the fine-tuned network
    ("dog", [], {"model": STEPS, "guide": STEPS, "total": 2 * STEPS}),
    # guided only for t in [0, 500]: 4 of the 8 steps (428, 285, 143, 0); elsewhere the guide is not called
    ("dog", ["--interval", "0,500"], {"model": STEPS, "guide": 4, "total": STEPS + 4}),
])
def test_evaluations_per_image_recorded(checkpoints, tmp_path, method, extra, expected):
    assert _run(checkpoints, tmp_path / "s", "--method", method, *extra) == 0
    assert _record(tmp_path / "s")["network_evaluations_per_image"] == expected


def test_rerun_keeps_the_recorded_evaluations(checkpoints, tmp_path):
    assert _run(checkpoints, tmp_path / "s") == 0
    assert _run(checkpoints, tmp_path / "s") == 0  # nothing left to generate
    record = _record(tmp_path / "s")
    assert record["generated_now"] == 0
    assert record["network_evaluations_per_image"] == {"model": STEPS, "guide": STEPS, "total": 2 * STEPS}


def test_guide_not_called_outside_the_interval():
    """Count the guide's calls and the timesteps it saw: only those inside the interval."""
    ft_net, pre_net = tiny_dit(num_classes=3, seed=2), tiny_dit(num_classes=10, seed=1)
    seen: list[float] = []
    pre_net.register_forward_pre_hook(lambda m, args: seen.extend(args[1].unique().tolist()))
    den = build_guided_denoiser("dog", Denoiser(ft_net, ft_net.config), Denoiser(pre_net, pre_net.config),
                                scale=2.0, interval=(300.0, 800.0))
    with torch.no_grad():
        sample_from_seeds(den, [0, 1], torch.tensor([0, 1]), (4, 8, 8), sampler="ddim", steps=10)
    # ddim10 visits 900, 800, ..., 0: inside [300, 800] are 300, 400, 500, 600, 700, 800
    assert sorted(seen) == [300, 400, 500, 600, 700, 800]
    assert den.uncond.evaluations == 2 * 6 and den.cond.evaluations == 2 * 10


def test_precision_in_settings_and_key(checkpoints, tmp_path):
    assert _run(checkpoints, tmp_path / "fp32") == 0
    assert _run(checkpoints, tmp_path / "bf16", "--precision", "bf16") == 0
    fp32, bf16 = _record(tmp_path / "fp32"), _record(tmp_path / "bf16")
    assert fp32["settings"]["precision"] == "fp32"  # auto on a CPU
    assert bf16["settings"]["precision"] == "bf16" and bf16["key"] != fp32["key"]
    diff = np.abs(_images(tmp_path / "fp32") - _images(tmp_path / "bf16"))
    assert 0 < diff.max() <= 24  # bf16 moves pixels a little (8 bits of mantissa), not to other images
    # a bf16 run into the fp32 folder is refused, naming the field
    assert _run(checkpoints, tmp_path / "fp32", "--precision", "bf16") == 2


def test_fp32_key_unchanged_by_the_precision_field(checkpoints):
    """Sets made before the field existed were fp32: their settings keys stay valid."""
    models = load_models(str(checkpoints / "ft"), str(checkpoints / "pre"))
    s = GenerationSettings(seeds=[0], labels=[0])
    record = s.resolved(models.config.latent).pixel_fields()
    assert "precision" not in record
    assert settings_key(s, models) == settings_key(GenerationSettings(seeds=[0], labels=[0], precision="fp32"), models)
    assert settings_key(GenerationSettings(seeds=[0], labels=[0], precision="bf16"), models) != settings_key(s, models)


def test_precision_errors(checkpoints, tmp_path, capsys):
    assert _run(checkpoints, tmp_path / "x", "--precision", "tf32") == 2
    err = capsys.readouterr().err
    assert "--precision: tf32" in err and "CPU" in err
    with pytest.raises(ValueError, match="precision: unknown 'fp8'"):
        GenerationSettings(precision="fp8")


@pytest.mark.slow
def test_compile_gives_the_same_images(checkpoints, tmp_path):
    assert _run(checkpoints, tmp_path / "eager", "--method", "cfg") == 0
    assert _run(checkpoints, tmp_path / "compiled", "--method", "cfg", "--compile") == 0
    record = _record(tmp_path / "compiled")
    assert record["key"] == _record(tmp_path / "eager")["key"]  # compile is not part of the settings
    info = record["compile"]
    assert info["compiled"] is True or info["note"].startswith("--compile: ")
    if info["compiled"]:
        assert info["first_call_seconds"] > 0
    assert np.abs(_images(tmp_path / "eager") - _images(tmp_path / "compiled")).max() <= 1


def _pixel_mean(samples, reference, metrics, output=None, **kw):
    """A cheap metric computed from the samples themselves (this test checks the sweep's plumbing, not FID)."""
    with np.load(samples) as z:
        result = {"metrics": {"fid": float(z["arr_0"].astype(np.float64).mean())}}
    if output is not None:
        output.write_text(json.dumps(result))
    return result


def test_sweep_precision_and_compile_flags(checkpoints, tmp_path, monkeypatch, capsys):
    from domain_guidance.pipelines import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "evaluate", _pixel_mean)
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    args = ["sweep", "--model", str(checkpoints / "ft"), "--guide", str(checkpoints / "pre"), "--reference",
            str(tmp_path / "ref.npz"), "--methods", "dog", "--scales", "2", "--seeds", "0-2", "--steps", "3",
            "--device", "cpu", "--out", str(tmp_path / "sweep")]
    assert main([*args, "--precision", "bf16"]) == 0
    record = _record(tmp_path / "sweep" / "dog-w2")
    assert record["settings"]["precision"] == "bf16"
    assert record["network_evaluations_per_image"] == {"model": 3, "guide": 3, "total": 6}
    assert json.loads((tmp_path / "sweep" / "results.json").read_text())["config"]["precision"] == "bf16"
    capsys.readouterr()
    assert main([*args, "--precision", "tf32"]) == 2
    assert "--precision: tf32" in capsys.readouterr().err
    assert main([*args, "--precision", "fp32"]) == 2  # bf16 rows and samples are not relabelled fp32
    assert "holds rows scored another way (precision: 'bf16' -> 'fp32')" in capsys.readouterr().err
