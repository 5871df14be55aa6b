"""Exact resume for what the published presets use: LoRA on a frozen base, and a latent model
trained from the latent cache. N steps + stop + resume for N more == 2N steps in one go,
bit for bit (trained weights, EMA, optimizer moments), like test_resume.py does for full pixel runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from domain_guidance.core.models import DiT, dit_config
from domain_guidance.io.checkpoints import save_checkpoint
from domain_guidance.pipelines.training import load_train_state, train
from domain_guidance.pipelines.training.logging import read_log

from .conftest import tiny_config
from .test_resume import EXACT, assert_same_state


@pytest.fixture(scope="module")
def latent_base(tmp_path_factory, tiny_vae_dir) -> Path:
    """A latent DiT (4x4x4 latents of the tiny VAE: 8x8 RGB images; hidden 32, depth 1, 10 classes + null)."""
    cfg = dit_config("T/2", input_size=4, in_channels=4, num_classes=10, hidden_size=32, depth=1, num_heads=2,
                     latent=True, vae=str(tiny_vae_dir))
    gen = torch.Generator().manual_seed(321)
    net = DiT(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    path = tmp_path_factory.mktemp("latent-base") / "latent-base"
    save_checkpoint(path, net, cfg)
    return path


def run_sets(kind: str, tiny_base: Path, latent_base: Path, vae_dir: Path) -> list[str]:
    lora = ["mode=lora", "lora.rank=4", "lora.dropout=0.1"]  # dropout: the per-step reseeded global RNG too
    data = ["data.dataset=digits", "data.resolution=8", "data.images_per_class=12"]
    if kind == "lora-pixels":
        return [*lora, f"base={tiny_base}", *data]
    if kind == "lora-latent-cache":  # dit-xl2-imagenet-lora in miniature: LoRA on a latent base, cached latents
        return [*lora, f"base={latent_base}", *data, "data.latent_cache=true"]
    if kind == "scratch-latent-cache":
        return ["init=scratch", f"vae={vae_dir}", *data, "data.latent_cache=true"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["lora-pixels", "lora-latent-cache", "scratch-latent-cache"])
def test_resume_is_bit_identical(tmp_path, tiny_base, latent_base, tiny_vae_dir, kind):
    sets = [*run_sets(kind, tiny_base, latent_base, tiny_vae_dir), *EXACT]
    one = train(tiny_config(tmp_path / "one", "steps=6", *sets, preset=None))
    first = train(tiny_config(tmp_path / "two", "steps=3", *sets, preset=None))  # stop after N = 3 ...
    assert first.step == 3
    second = train(tiny_config(tmp_path / "two", "steps=6", *sets, preset=None), resume=True)  # ... and N more
    a, b = load_train_state(one.checkpoint), load_train_state(second.checkpoint)
    assert a["mode"] == b["mode"] == ("lora" if kind.startswith("lora") else "full")
    if kind.startswith("lora"):
        assert a["model"] and all("lora_" in k or ".target." in k for k in a["model"])  # only what LoRA trains
    assert_same_state(a, b)
    start = load_train_state(first.checkpoint)  # the weights did move between steps 3 and 6
    assert any(not torch.equal(start["model"][k], a["model"][k]) for k in a["model"])
    if "latent" in kind:
        assert read_log(tmp_path / "two", "start")[0]["data"]["latent_cache"] is True
        assert (tmp_path / "two" / "latents.safetensors").is_file()
    # what `dog sample` reads is identical too
    name = "lora.safetensors" if kind.startswith("lora") else "model.safetensors"
    fa, fb = load_file(one.checkpoint / name), load_file(second.checkpoint / name)
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    assert [r["step"] for r in read_log(tmp_path / "two", "train")] == [1, 2, 3, 4, 5, 6]
