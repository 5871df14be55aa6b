"""``which`` on our training checkpoints (defect 4): "model" reads the raw weights from train_state.pt,
"ema" the exported EMA weights, and ``LoadedModel.which`` says which set was actually loaded."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from domain_guidance.core.models import DiT, dit_config
from domain_guidance.io import checkpoints as ck
from domain_guidance.io.checkpoint_files import CheckpointError
from domain_guidance.pipelines.training import load_train_state, resolve_config, train

TINY = ['model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}', "batch_size=8", "progress=false",
        "tensorboard=false", "sample_every=0", "log_every=1", "ckpt_every=1000", "device=cpu", "steps=2",
        "lr=1e-2", "ema.decay=0.9", "dist_timeout_s=60"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one thread."""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    train(resolve_config("cpu-tiny", sets=[f"out={out}", *TINY]))
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lora")
    cfg = dit_config("T/2", input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=1, num_heads=2,
                     latent=False, vae=None)
    gen = torch.Generator().manual_seed(5)
    net = DiT(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    base = ck.save_checkpoint(root / "base", net, cfg)
    out = root / "run"
    train(resolve_config(None, sets=[f"out={out}", "mode=lora", f"base={base}", "data.dataset=digits",
                                     "data.resolution=8", "data.classes=[7, 8, 9]", "lora.rank=4", *TINY]))
    return out


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    return sum(not torch.equal(a[k], b[k]) for k in a)


def test_full_run_which_model_loads_the_raw_weights(full_run):
    state = load_train_state(full_run / "checkpoints" / "latest")
    assert state["mode"] == "full" and _differs(state["model"], state["ema"]) > 0  # two distinct sets
    ema = ck.load_model(full_run)  # a run directory: its latest checkpoint
    raw = ck.load_model(full_run, which="model")
    assert (ema.which, raw.which) == ("ema", "model") and ema.format == raw.format == "dir"
    assert ema.path == raw.path == full_run / "checkpoints" / "latest"
    assert raw.config == ema.config and raw.metadata["step"] == 2
    for k, v in raw.net.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
        assert torch.equal(ema.net.state_dict()[k], state["ema"][k]), k
    # what the dog sample --which model path records: the set loaded, in the copy too
    dst = ck.convert_checkpoint(full_run, full_run.parent / "raw-copy", which="model")
    copy = ck.load_model(dst, which="model")
    assert copy.metadata["weights"] == "model" and copy.metadata["converted_from"]["which"] == "model"
    assert copy.which == "model" and all(torch.equal(v, state["model"][k]) for k, v in copy.net.state_dict().items())
    with pytest.raises(CheckpointError, match="holds only 'model' weights .* use which='model'"):
        ck.load_model(dst)  # the default asks for EMA weights, which the copy does not have


def test_lora_run_which_model_loads_the_raw_adapter(lora_run):
    state = load_train_state(lora_run / "checkpoints" / "latest")
    assert state["mode"] == "lora" and _differs(state["model"], state["ema"]) == len(state["model"]) > 0
    ema = ck.load_model(lora_run / "checkpoints" / "latest", which="ema")
    raw = ck.load_model(lora_run, which="model")
    assert (ema.which, raw.which) == ("ema", "model") and raw.format == "lora"
    assert raw.base_config.num_classes == 10 and raw.config.num_classes == 3
    for name in ("raw", "ema"):
        got = {n: p for n, p in (raw if name == "raw" else ema).net.named_parameters() if p.requires_grad}
        want = state["model" if name == "raw" else "ema"]
        assert sorted(got) == sorted(want)
        for k in want:
            assert torch.equal(got[k], want[k]), (name, k)


def test_which_model_without_train_state_is_refused(full_run, tmp_path):
    exported = tmp_path / "exported"
    shutil.copytree(full_run / "checkpoints" / "latest", exported)
    (exported / "train_state.pt").unlink()
    assert ck.load_model(exported).which == "ema"
    with pytest.raises(CheckpointError) as e:
        ck.load_model(exported, which="model")
    msg = str(e.value)
    assert str(exported) in msg and "holds only 'ema' weights (model.safetensors)" in msg
    assert "no train_state.pt" in msg and "use which='ema'" in msg
    with pytest.raises(CheckpointError, match="which='raw' is not a weight set; expected 'ema' or 'model'"):
        ck.load_model(exported, which="raw")


def test_single_set_files_report_no_which(tmp_path):
    net = DiT(dit_config("T/2", input_size=8, num_classes=4, hidden_size=32, depth=1, num_heads=2))
    path = ck.save_checkpoint(tmp_path / "plain", net, net.config)  # no "weights" in its metadata
    assert ck.load_model(path).which is None and ck.load_model(path, which="model").which is None


def test_missing_path_is_an_error_without_fallback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pretrained_models").mkdir()
    net = DiT(dit_config("T/2", input_size=8, num_classes=4, hidden_size=32, depth=1, num_heads=2))
    torch.save(net.state_dict(), tmp_path / "pretrained_models" / "DiT-T-2.pt")
    with pytest.raises(CheckpointError, match=r"^DiT-T-2\.pt: no such file or directory"):
        ck.load_model("DiT-T-2.pt")  # not looked up in pretrained_models/
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="a training run directory without a complete checkpoint"):
        ck.load_model(tmp_path / "run")
