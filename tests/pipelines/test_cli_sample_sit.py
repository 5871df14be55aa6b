"""`dog sample` on SiT weights in the official raw layout (a plain dict of tensors that cannot say what it
predicts): refused for a flow sampler until ``--prediction velocity`` is given, then the same images as the
Python API; a LoRA directory's stored configs win over a contradicting declaration."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.models import DiT, dit_config
from domain_guidance.core.models.adapters import add_lora
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.checkpoints import CheckpointError, load_model, retarget, save_model
from domain_guidance.io.vae import VAE
from domain_guidance.pipelines.generate import load_models

pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS, LABELS = [0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2]  # class-balanced default: seed index mod 3


@pytest.fixture(scope="module")
def raw_sit(tmp_path_factory) -> Path:
    """``base.pt`` (10 classes + null) and ``ft.pt`` (3 classes + null): tiny 8x8x4 SiT-T/2 weights saved as
    official ``SiT-XL-2-256x256.pt`` is (a raw state dict; the learned-sigma half of the output present)."""
    root = tmp_path_factory.mktemp("raw-sit")
    cfg = dit_config("SiT-T/2", input_size=8, num_classes=10)  # a registry size: the loader infers it from shapes
    torch.manual_seed(3)
    base = DiT(cfg).eval()
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.05)
        base.y_embedder.embedding_table.weight.mul_(20)  # labels move the output: guidance becomes visible
    ft, _ = retarget(base, cfg, num_classes=3, seed=5)
    with torch.no_grad():
        ft.y_embedder.embedding_table.weight.mul_(50)
        ft.final_layer.linear.weight.add_(0.05 * torch.randn_like(ft.final_layer.linear.weight))
    torch.save(base.state_dict(), root / "base.pt")
    torch.save(ft.state_dict(), root / "ft.pt")
    return root


def _cli(raw_sit: Path, vae: Path, out: Path, *extra: str) -> int:
    method = extra[extra.index("--method") + 1] if "--method" in extra else "dog"
    guide = ["--guide", str(raw_sit / "base.pt")] if method == "dog" else []  # --guide is DoG's only
    return main(["sample", "--model", str(raw_sit / "ft.pt"), *guide, "--vae", str(vae),
                 "--seeds", "0-5", "--steps", "4", "--batch-size", "6", "--out", str(out), "--no-progress",
                 "--device", "cpu", *extra])


def _api(raw_sit: Path, vae: Path, method: str, sampler: str) -> np.ndarray:
    """The same images through the Python API, from the checkpoints loaded with the declared prediction."""
    ft, base = (load_model(raw_sit / name, prediction="velocity") for name in ("ft.pt", "base.pt"))
    assert ft.format == base.format == "dit-raw" and ft.config.learn_sigma and ft.config.num_classes == 3
    den = build_guided_denoiser(method, Denoiser(ft.net, ft.config),
                                Denoiser(base.net, base.config) if method == "dog" else None, scale=1.5)
    with torch.inference_mode():
        latents = sample_from_seeds(den, SEEDS, torch.tensor(LABELS), (4, 8, 8), sampler=sampler, steps=4)
        images = VAE.from_pretrained(vae).decode(latents)  # (6, 3, 16, 16) in [-1, 1]
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _read(out: Path) -> np.ndarray:
    with np.load(out / "samples.npz") as z:
        assert z["labels"].tolist() == LABELS
        return z["arr_0"]  # (6, 16, 16, 3) uint8


def test_raw_sit_weights_need_declared_velocity_for_a_flow_sampler(raw_sit, tiny_vae_dir, tmp_path, capsys):
    code = _cli(raw_sit, tiny_vae_dir, tmp_path / "undeclared", "--sampler", "ode-heun")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "--sampler ode-heun integrates velocity predictions, but --model" in err
    assert "predicts 'eps'" in err and "pass --prediction velocity" in err
    assert not (tmp_path / "undeclared" / "settings.json").exists()  # refused before anything was written

    # declared velocity with the (DiT) default sampler: the error names the flow samplers instead
    code = _cli(raw_sit, tiny_vae_dir, tmp_path / "ddpm", "--prediction", "velocity")
    err = capsys.readouterr().err
    assert code == 2 and "--sampler ddpm integrates eps predictions" in err
    assert ("(declared by --prediction velocity): pass --sampler one of flow-dpm-solver++, flow-euler, flow-heun, "
            "flow-unipc, ode-dopri5, ode-euler, ode-heun, sde-euler") in err


def test_a_raw_sit_guide_of_a_stored_sit_model_needs_the_declaration(raw_sit, tiny_vae_dir, tmp_path, capsys):
    ft = load_model(raw_sit / "ft.pt", prediction="velocity")
    save_model(tmp_path / "ft-ours", ft.net, ft.config)  # our format: its config says velocity
    code = main(["sample", "--model", str(tmp_path / "ft-ours"), "--guide", str(raw_sit / "base.pt"), "--vae",
                 str(tiny_vae_dir), "--sampler", "ode-euler", "--steps", "2", "--seeds", "0-1", "--device", "cpu",
                 "--no-progress", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "predicts 'velocity' but --guide" in err and "is read as predicting 'eps'" in err, err
    assert "pass --prediction velocity" in err and not (tmp_path / "out" / "settings.json").exists()


@pytest.mark.parametrize("method, sampler", [("dog", "ode-heun"), ("cfg", "sde-euler")])
def test_declared_velocity_samples_equal_the_python_api(raw_sit, tiny_vae_dir, tmp_path, method, sampler):
    out = tmp_path / method
    assert _cli(raw_sit, tiny_vae_dir, out, "--prediction", "velocity", "--method", method, "--sampler", sampler) == 0
    got = _read(out)
    assert got.shape == (6, 16, 16, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, _api(raw_sit, tiny_vae_dir, method, sampler))
    unguided = _api(raw_sit, tiny_vae_dir, "unguided", sampler)
    assert np.abs(got.astype(int) - unguided.astype(int)).max() > 2  # the guidance does something


def test_load_models_applies_the_declaration_to_model_and_guide(raw_sit):
    auto = load_models(str(raw_sit / "ft.pt"), str(raw_sit / "base.pt"), decoder=False)
    assert auto.config.prediction == auto.guide.prediction == "eps"  # raw weights cannot say
    sit = load_models(str(raw_sit / "ft.pt"), str(raw_sit / "base.pt"), decoder=False, prediction="velocity")
    assert sit.finetuned.prediction == sit.guide.prediction == "velocity"
    assert sit.identity["model"]["config"]["prediction"] == sit.identity["guide"]["config"]["prediction"] == "velocity"
    with pytest.raises(ValueError, match="prediction: expected one of auto, eps, velocity, got 'flow'"):
        load_models(str(raw_sit / "ft.pt"), decoder=False, prediction="flow")


def test_a_lora_dirs_stored_configs_win(raw_sit, tmp_path):
    base = load_model(raw_sit / "base.pt", prediction="velocity")
    target = base.config.replace(num_classes=3)
    save_model(tmp_path / "lora", add_lora(base.net, target, rank=2), target, base=raw_sit / "base.pt")
    for prediction in ("auto", "velocity"):
        models = load_models(str(tmp_path / "lora"), decoder=False, prediction=prediction)
        assert models.finetuned.prediction == models.guide.prediction == "velocity"
    with pytest.raises(CheckpointError, match=r"prediction='eps' was declared, but this LoRA checkpoint's stored "
                                              r"configs say 'velocity' \(they win\)"):
        load_models(str(tmp_path / "lora"), decoder=False, prediction="eps")
