"""Checks that a plausible bug once slipped past: --model-w in the settings key and rerun refusal, the demo
study's cache keyed by its judge, the single-pass teacher called at w = 1, precision on a separate guide."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.io.checkpoints import save_model
from domain_guidance.pipelines.generate import GenerationSettings, load_models, settings_key
from domain_guidance.pipelines.generate.models import build_denoiser
from domain_guidance.pipelines.training.config import EmaConfig, SinglePassConfig
from domain_guidance.pipelines.training.ema import EMA
from domain_guidance.pipelines.training.single_pass import SinglePassTarget
from tests.core.helpers import tiny_dit


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _w_conditioned(path, seed: int = 3):
    """A tiny pixel DiT with a w input whose embedder is not zero (w changes its output), saved as single-pass."""
    net = tiny_dit(num_classes=3, seed=seed, in_channels=1, latent=False, w_embed=True)
    with torch.no_grad():
        for p in net.w_embedder.parameters():
            p.normal_(0, 0.5)
    save_model(path, net, net.config, {"guidance_distilled": {"method": "dog-single-pass", "w": 2.0, "w_cond": True}})
    return net


def test_model_w_is_in_the_settings_key_and_a_rerun_with_another_is_refused(tmp_path, capsys):
    _w_conditioned(tmp_path / "wc")
    models = load_models(str(tmp_path / "wc"))
    s = GenerationSettings(method="unguided", sampler="ddim", steps="4", seeds=[0, 1], labels=[0, 1])
    keys = {w: settings_key(dataclasses.replace(s, model_w=w), models) for w in (None, 2.0, 3.0)}
    assert keys[2.0] != keys[3.0] and keys[None] != keys[3.0]
    args = ["sample", "--model", str(tmp_path / "wc"), "--method", "unguided", "--seeds", "0-1", "--sampler",
            "ddim", "--steps", "4", "--out", str(tmp_path / "s"), "--no-progress", "--device", "cpu"]
    assert main([*args, "--model-w", "2"]) == 0
    first = json.loads((tmp_path / "s" / "settings.json").read_text())
    assert first["settings"]["model_w"] == 2.0
    capsys.readouterr()
    assert main([*args, "--model-w", "3"]) == 2  # the same --out with another w: refused, nothing overwritten
    assert "model_w: 2.0 -> 3.0" in capsys.readouterr().err  # the refusal names the field
    assert json.loads((tmp_path / "s" / "settings.json").read_text())["key"] == first["key"]
    assert main([*args, "--model-w", "3", "--out", str(tmp_path / "s3")]) == 0
    with np.load(tmp_path / "s" / "samples.npz") as a, np.load(tmp_path / "s3" / "samples.npz") as b:
        assert not np.array_equal(a["arr_0"], b["arr_0"])  # w is a real input: other pixels


def test_study_cells_are_recomputed_when_the_judge_changes(tmp_path):
    from domain_guidance.pipelines.demo.classifier import SmallCNN
    from domain_guidance.pipelines.demo.config import DemoConfig
    from domain_guidance.pipelines.demo.workbench import Workbench

    info = {"test_accuracy": 0.91, "train_images": 400, "test_images": 100, "steps": 50}
    wb = Workbench(DemoConfig(), tmp_path, {"checkpoint": str(tmp_path / "source.safetensors")}, SmallCNN(), info,
                   np.zeros((4, 16, 16, 1), np.uint8), np.zeros(4, np.int64))
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    cell = {"finetune_steps": 100, "images_per_class": 10, "progress": True}
    assert wb.cached(tmp_path / "cell.json", cell, compute)["value"] == 1
    assert wb.cached(tmp_path / "cell.json", {**cell, "progress": False}, compute)["value"] == 1  # read back
    retrained = dataclasses.replace(wb, clf_info={**info, "test_accuracy": 0.87})  # another judge
    assert retrained.cached(tmp_path / "cell.json", cell, compute)["value"] == 2 and len(calls) == 2
    other_source = dataclasses.replace(retrained, source={"checkpoint": str(tmp_path / "other.safetensors")})
    assert other_source.cached(tmp_path / "cell.json", cell, compute)["value"] == 3


def test_single_pass_teacher_is_called_at_w_one():
    """DogFit: the EMA teacher gives eps(x, c; w = 1) whatever w the row was drawn with (spied on the call)."""
    net = tiny_dit(num_classes=3, seed=2, w_embed=True)
    with torch.no_grad():
        for p in net.w_embedder.parameters():
            p.normal_(0, 0.5)  # w changes the output, so a teacher at another w would give other numbers
    base = tiny_dit(num_classes=10, seed=1)
    target = SinglePassTarget(SinglePassConfig(enabled=True, w=2.0, w_cond=True), net, base, 10, adapter_off=False,
                              flow=False, num_timesteps=1000, data_channels=4)
    trainable = dict(net.named_parameters())
    ema = EMA(trainable, EmaConfig(decay=0.9))
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 4, 8, 8, generator=g), torch.tensor([10, 500, 990])
    y, w = torch.tensor([0, 1, 2]), torch.tensor([3.0, 1.5, 5.0])
    seen = []
    hook = net.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs.get("w")), with_kwargs=True)
    offset = target.offset(x, t, y, w, torch.ones(3, dtype=torch.bool), ema, trainable)
    hook.remove()
    assert len(seen) == 1 and seen[0] is not None and torch.equal(seen[0], torch.ones(3))
    with torch.no_grad():
        cond = net(x, t, y, w=torch.ones(3))[:, :4]
        unc = base(x, t, torch.full_like(y, 10))[:, :4]
        at_drawn_w = net(x, t, y, w=w)[:, :4]
    torch.testing.assert_close(offset, (w - 1).view(-1, 1, 1, 1) * (cond - unc), rtol=0, atol=2e-6)
    assert (at_drawn_w - cond).abs().amax() > 1e-4  # the spy matters: w = 3 would change the teacher


def test_precision_reaches_a_separate_guide_network(checkpoints):
    models = load_models(str(checkpoints / "ft"), str(checkpoints / "pre"))
    dog = build_denoiser(GenerationSettings(method="dog", precision="bf16", seeds=[0], labels=[0]), models)
    assert dog.uncond is not dog.cond and dog.uncond.net is models.guide.net  # the guide: another network
    assert (dog.cond.precision, dog.uncond.precision) == ("bf16", "bf16")
    cfg = build_denoiser(GenerationSettings(method="cfg", precision="bf16", seeds=[0], labels=[0]), models)
    assert cfg.uncond is cfg.cond and cfg.cond.precision == "bf16"  # one network, one Denoiser
    fp32 = build_denoiser(GenerationSettings(method="dog", precision="fp32", seeds=[0], labels=[0]), models)
    assert (fp32.cond.precision, fp32.uncond.precision) == ("fp32", "fp32")
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([500, 500]), torch.tensor([0, 1])
    with torch.no_grad():  # and the guide's arithmetic is bf16's, not fp32's
        assert not torch.equal(dog.uncond(x, t, torch.full_like(y, 10)), fp32.uncond(x, t, torch.full_like(y, 10)))
