"""Image folders with corrupt files, LoRA vs full fine-tuning from a base, DoG sampling with one base copy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.models.adapters import adapter_disabled
from domain_guidance.core.sampling import sample_from_seeds
from domain_guidance.io.checkpoints import load_model
from domain_guidance.pipelines.generate import load_models
from domain_guidance.pipelines.training import load_train_state, train
from domain_guidance.pipelines.training.logging import read_log
from domain_guidance.pipelines.training.model import count_storages

from .conftest import tiny_config


def write_folder(root, good_per_class: int = 4, corrupt: bool = True):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        for i in range(good_per_class):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "cats" / "empty.png").write_bytes(b"")
        good = (root / "dogs" / "0.png").read_bytes()
        (root / "dogs" / "truncated.png").write_bytes(good[: len(good) // 2])
        (root / "dogs" / "notes.jpg").write_text("not an image")
    return root


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    folder = write_folder(tmp_path / "images")
    sets = ("init=scratch", f"data.dataset={folder}", "data.resolution=8", "data.max_bad_fraction=0.5", "steps=2")
    result = train(tiny_config(tmp_path / "run", *sets, preset=None))
    start = read_log(result.run_dir, "start")[0]
    assert start["bad_files"] == 3 and start["data"]["dataset"]["count"] == 8
    note = " ".join(r["message"] for r in read_log(result.run_dir, "note"))
    assert "skipped 3 unreadable image file(s)" in note and "empty.png" in note
    with pytest.raises(ValueError, match="unreadable, above max_bad_fraction"):  # too many bad files: a clear stop
        train(tiny_config(tmp_path / "run2", *sets[:-2], "steps=2", preset=None))


def test_unlabelled_folder_trains_without_label_dropout(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    result = train(tiny_config(tmp_path / "run", "init=scratch", f"data.dataset={folder}", "data.resolution=8",
                                 "steps=1", preset=None))
    config = load_model(result.checkpoint).config
    assert config.num_classes == 1 and config.null_label is None and config.class_dropout_prob == 0
    assert "not possible with an unlabelled folder" in read_log(result.run_dir, "note")[0]["message"]


def test_lora_finetune_then_dog_holds_one_copy_of_the_base(tmp_path, tiny_base):
    sets = ("mode=lora", f"base={tiny_base}", "data.dataset=digits", "lora.rank=4", "data.classes=[7, 8, 9]",
            "steps=3", "lr=1e-2",
            "sample_every=3", "grid.num=3", "grid.steps=2")
    result = train(tiny_config(tmp_path / "lora", *sets, preset=None))
    ckpt = result.checkpoint
    # the run saved only what it trained: adapter + the new 4-row table, no base weights
    saved = load_file(ckpt / "lora.safetensors")
    assert all("lora_" in k or k.endswith("target.embedding_table.weight") for k in saved)
    assert saved["y_embedder.target.embedding_table.weight"].shape == (4, 32)
    state = load_train_state(ckpt)
    assert all("lora_" in k or ".target." in k for k in state["model"]) and "pos_embed" not in state["ema"]
    lora_json = json.loads((ckpt / "lora.json").read_text())
    assert lora_json["base"]["path"] == str(tiny_base.resolve()) and lora_json["base"]["sha256"]
    assert json.loads((result.run_dir / "grids" / "step_0000003.json").read_text())["rows"] == ["unguided", "cfg", "dog"]

    loaded = load_models(str(result.run_dir / "checkpoints" / "latest"))
    ft, guide = loaded.finetuned, loaded.guide
    assert ft.net is guide.net and guide.config.num_classes == 10 and ft.config.num_classes == 3
    base_net = load_model(tiny_base).net
    base_bytes = sum(p.numel() * p.element_size() for p in base_net.parameters())
    n_storages, total = count_storages(ft.net, guide.net)
    adapter_bytes = sum(t.numel() * t.element_size() for t in saved.values())
    assert total == base_bytes + adapter_bytes  # one copy of the base + what was trained, nothing else
    assert n_storages == len(list(base_net.parameters())) + len(saved)
    # the guide is exactly the pre-trained model; DoG runs two evaluations of that one network
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10, 500]), torch.tensor([10, 10])
    with torch.no_grad(), adapter_disabled(ft.net):
        assert torch.equal(ft.net(x, t, y), base_net(x, t, y))
    dog = build_guided_denoiser("dog", ft, guide, scale=2.0)
    out = sample_from_seeds(dog, [0, 1], torch.tensor([0, 2]), (1, 8, 8), sampler="ddim", steps=3, clip_denoised=True)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    assert count_storages(ft.net, guide.net) == (n_storages, total)  # sampling made no copy


def test_full_finetune_retargets_the_table_and_keeps_the_base(tmp_path, tiny_base):
    result = train(tiny_config(tmp_path / "full", f"base={tiny_base}", "data.dataset=digits", "data.classes=[3, 4]",
                               "label_dropout=0",
                               "steps=2", preset=None))
    loaded = load_model(result.checkpoint)
    net, config = loaded.net, loaded.config
    by_run_dir = load_model(result.run_dir).net  # a run directory means its latest checkpoint
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), by_run_dir.state_dict().values()))
    base = load_model(tiny_base)
    base_net, base_cfg = base.net, base.config
    assert config.num_classes == 2 and config.null_label is None and base_cfg.null_label == 10
    assert net.y_embedder.embedding_table.weight.shape == (2, 32)  # fresh K-row table (no dropout: no null row)
    meta = json.loads((result.checkpoint / "metadata.json").read_text())["metadata"]
    assert meta["base"]["path"] == str(tiny_base.resolve()) and meta["step"] == 2
    with pytest.raises(ValueError, match="CFG needs a fine-tuned model with a null label"):
        loaded = load_models(str(result.checkpoint), str(tiny_base))
        build_guided_denoiser("cfg", loaded.finetuned, loaded.guide)
