"""Resume is refused when an input changed under the same name: an image's pixels edited in place, the base
weights replaced at the same path (LoRA and single-pass read them every step). Content fingerprints, not names."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from domain_guidance.io.checkpoints import load_model, save_checkpoint
from domain_guidance.io.fingerprints import StageInputsChanged
from domain_guidance.pipelines.training import load_train_state, train
from domain_guidance.pipelines.training.logging import read_log

from .conftest import tiny_config
from .test_cli_finetune import _folder, _folder_config


def test_resume_refuses_pixels_edited_in_place(tmp_path):
    folder, run = _folder(tmp_path / "images"), tmp_path / "run"
    train(_folder_config(run, folder, 1))
    path = folder / "cats" / "2.png"
    st = path.stat()
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # one pixel; the same file name and file times
    Image.fromarray(pixels).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(StageInputsChanged, match=r"data changed since the checkpoint .*image contents changed under "
                                                 r"the same file names \(content hash [0-9a-f]{12} -> [0-9a-f]{12}\)"):
        train(_folder_config(run, folder, 2), resume=True)
    pixels[0, 0] = 255 - pixels[0, 0]  # restored: the resume goes on
    Image.fromarray(pixels).save(path)
    assert train(_folder_config(run, folder, 2), resume=True).step == 2


def _replace_weights(path, seed: int) -> None:
    """Overwrite the checkpoint at ``path`` with other random weights of the same config (same path)."""
    loaded = load_model(path)
    net, cfg = loaded.net, loaded.config
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    tmp = path.parent / "replacement"
    save_checkpoint(tmp, net, cfg)
    shutil.rmtree(path)
    tmp.rename(path)


@pytest.mark.parametrize("kind", ["lora", "single-pass"])
def test_resume_refuses_replaced_base_weights(tmp_path, tiny_base, kind):
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    sets = [f"base={base}", "data.dataset=digits", "data.resolution=8", "data.images_per_class=4", "ckpt_every=1"]
    sets += ["mode=lora", "lora.rank=4"] if kind == "lora" else ["single_pass.enabled=true"]
    run = tmp_path / "run"
    train(tiny_config(run, "steps=1", *sets))
    recorded = load_train_state(run / "checkpoints" / "latest")["inputs"]["base"]
    _replace_weights(base, seed=7)
    with pytest.raises(StageInputsChanged, match=rf"base weights changed since the checkpoint \(data.dataset='digits', "
                                                 rf"base='{re.escape(str(base))}'\): base: recorded "
                                                 rf"{recorded[:16]}\.\.\., now [0-9a-f]{{16}}\.\.\. \(sha256 of "
                                                 rf"the base weights\); restore them"):
        train(tiny_config(run, "steps=2", *sets), resume=True)
    shutil.rmtree(base)
    shutil.copytree(tiny_base, base)  # the original weights again: the resume goes on
    assert train(tiny_config(run, "steps=2", *sets), resume=True).step == 2


def test_old_checkpoint_without_inputs_record_resumes_with_a_note(tmp_path, tiny_base):
    run = tmp_path / "run"
    sets = [f"base={tiny_base}", "mode=lora", "lora.rank=4", "data.dataset=digits", "data.resolution=8",
            "data.images_per_class=4", "ckpt_every=1"]
    train(tiny_config(run, "steps=1", *sets))
    path = run / "checkpoints" / "latest" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    del state["inputs"]
    torch.save(state, path)
    assert train(tiny_config(run, "steps=2", *sets), resume=True).step == 2
    notes = [r["message"] for r in read_log(run, "note")]
    assert any("records no base weights' sha256" in n for n in notes), notes


def test_resume_refuses_replaced_vae_weights(tmp_path, tiny_vae_dir):
    """A latent model trains on the VAE's latents: other VAE weights at the same path are other data."""
    from diffusers import AutoencoderKL

    vae = tmp_path / "vae"
    shutil.copytree(tiny_vae_dir, vae)
    sets = ["init=scratch", f"vae={vae}", "data.dataset=digits", "data.resolution=8", "data.channels=3",
            "data.images_per_class=2", "ckpt_every=1"]
    run = tmp_path / "run"
    train(tiny_config(run, "steps=1", *sets))
    model = AutoencoderKL.from_pretrained(vae)
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)
    model.save_pretrained(vae)  # the same folder, other weights
    with pytest.raises(StageInputsChanged, match=r"data changed since the checkpoint .*VAE weights \(the latents "
                                                 r"trained on\) [0-9a-f]{12} -> [0-9a-f]{12}"):
        train(tiny_config(run, "steps=2", *sets), resume=True)
