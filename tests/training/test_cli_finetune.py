"""`dog finetune --base` really starts from the base; contradictions and changed data are refused clearly."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from domain_guidance.cli import main
from domain_guidance.pipelines.training import load_train_state, resolve_config, train
from domain_guidance.pipelines.training.logging import read_log

from .conftest import TINY_NET, tiny_config

QUIET = ["tensorboard=false", "sample_every=0", "device=cpu", "batch_size=8", "log_every=1"]


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "latest" / "model.safetensors")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ----- defect 2: --base means init=base -----

def test_base_flag_wins_over_a_scratch_preset_and_contradictions_are_named(tmp_path, capsys):
    assert main(["finetune", "--preset", "cpu-tiny", "--base", "some/base.pt", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["init"], printed["base"]) == ("base", "some/base.pt")
    # --set base=... and a config file's base mean the same
    assert resolve_config("cpu-tiny", sets=["base=b.pt"]).init == "base"
    assert resolve_config("cpu-tiny").init == "scratch" and resolve_config("cpu-tiny").base is None

    # an explicit init=scratch next to an explicit base: an error naming both, whichever way they came
    assert main(["finetune", "--preset", "cpu-tiny", "--base", "b.pt", "--set", "init=scratch", "--print-config"]) == 2
    err = _one_line_error(capsys)
    assert "init='scratch' (--set init=scratch)" in err and "base='b.pt' (--base)" in err
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("preset: cpu-tiny\ninit: scratch\n")
    assert main(["finetune", "--config", str(cfg_file), "--base", "b.pt", "--print-config"]) == 2
    err = _one_line_error(capsys)
    assert f"init='scratch' (config file {cfg_file})" in err and "(--base)" in err
    with pytest.raises(ValueError, match=r"init='scratch' \(--set init=scratch\).*base='b.pt' \(--set base=b.pt\)"):
        resolve_config("cpu-tiny", sets=["init=scratch", "base=b.pt"])
    # a later explicit init=base overrides the file's init=scratch: no contradiction
    assert resolve_config(config_file=cfg_file, sets=["init=base", "base=b.pt"]).init == "base"
    # dog pretrain has no base: a base given to it is the same contradiction
    assert main(["pretrain", "--preset", "cpu-tiny", "--set", "base=b.pt", "--print-config"]) == 2
    assert "init='scratch' (dog pretrain)" in _one_line_error(capsys)


def test_finetune_cli_starts_from_the_base_weights(tmp_path, capsys):
    """dog pretrain (2 steps) -> dog finetune --preset cpu-tiny --base RUN with lr 1e-12: the base's weights."""
    base_run, ft_run = tmp_path / "base", tmp_path / "ft"
    assert main(["pretrain", "--preset", "cpu-tiny", "--out", str(base_run), "--steps", "2", "--no-progress",
                 "--set", TINY_NET, "lr=3e-2", *QUIET]) == 0
    assert main(["finetune", "--preset", "cpu-tiny", "--base", str(base_run), "--out", str(ft_run), "--steps", "1",
                 "--no-progress", "--set", "lr=1e-12", "data.classes=[3, 4]", *QUIET]) == 0
    capsys.readouterr()
    base_sd, ft_sd = _weights(base_run), _weights(ft_run)  # EMA weights, official keys
    ft_cfg = json.loads((ft_run / "checkpoints" / "latest" / "config.json").read_text())
    assert (ft_cfg["hidden_size"], ft_cfg["depth"], ft_cfg["num_classes"]) == (32, 1, 2)  # the base's size, not cpu-tiny's
    raw = load_train_state(ft_run / "checkpoints" / "latest")["model"]  # trained (not EMA) weights after 1 step
    shared = [k for k in base_sd if not k.startswith("y_embedder.")]
    assert len(shared) > 10
    # lr 1e-12: Adam moves a coordinate by about lr per step; the EMA's blend may round each value by an ulp
    # (2 ulps of float32 relative; the kernel that rounds depends on the CPU's instruction set)
    rtol, atol = 2 * torch.finfo(torch.float32).eps, 1e-11
    for k in shared:
        assert torch.allclose(ft_sd[k], base_sd[k], rtol=rtol, atol=atol), k
        assert torch.allclose(raw[k], base_sd[k], rtol=rtol, atol=atol), k
    # the base is not a fresh initialisation: its trained tensors moved away from the scratch init of the same seed
    fresh_sd = _weights(train(tiny_config(tmp_path / "fresh", "steps=1", "lr=1e-12")).run_dir)
    moved = sorted(k for k in shared if (base_sd[k] - fresh_sd[k]).abs().max() > 1e-3)
    assert "final_layer.linear.weight" in moved and "blocks.0.adaLN_modulation.1.weight" in moved, moved
    meta = json.loads((ft_run / "checkpoints" / "latest" / "metadata.json").read_text())["metadata"]
    assert meta["train_config"]["init"] == "base" and meta["base"]["path"].startswith(str(base_run.resolve()))


# ----- defect 6: resume refuses changed data -----

def _folder(root, classes=("cats", "dogs"), per_class: int = 4):
    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _folder_config(run, folder, steps: int):
    return tiny_config(run, f"data.dataset={folder}", "data.resolution=8", f"steps={steps}", "ckpt_every=1")


def test_resume_refuses_changed_data_and_names_the_change(tmp_path, capsys):
    folder, run = _folder(tmp_path / "images"), tmp_path / "run"
    train(_folder_config(run, folder, 1))
    saved = load_train_state(run / "checkpoints" / "latest")["data"]
    assert (saved["images"], saved["num_classes"], saved["classes"]) == (8, 2, ["cats", "dogs"])

    removed = (folder / "dogs" / "3.png").read_bytes()
    (folder / "dogs" / "3.png").unlink()  # fewer files
    with pytest.raises(ValueError, match=r"data changed since the checkpoint .*images 8 -> 7"):
        train(_folder_config(run, folder, 2), resume=True)
    # the same through the CLI: one line, exit 2
    args = ["pretrain", "--preset", "cpu-tiny", "--out", str(run), "--steps", "2", "--resume", "--no-progress",
            "--set", TINY_NET, f"data.dataset={folder}", "data.resolution=8", "ckpt_every=1", "progress=false",
            "log_every=1", "tensorboard=false", "sample_every=0", "device=cpu", "batch_size=8", "dist_timeout_s=60"]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "data changed since the checkpoint" in err and "images 8 -> 7" in err and str(folder) in err

    (folder / "dogs" / "3.png").write_bytes(removed)  # restored
    _folder(folder, classes=("birds",), per_class=2)  # a new class
    with pytest.raises(ValueError, match=r"images 8 -> 10; classes \(2\) \[cats, dogs\] -> \(3\) \[birds, cats, dogs\] "
                                         r"\(added \[birds\]\)"):
        train(_folder_config(run, folder, 2), resume=True)
    for p in (folder / "birds").iterdir():
        p.unlink()
    (folder / "birds").rmdir()

    (folder / "cats" / "0.png").rename(folder / "cats" / "9.png")  # same count and classes, other files
    with pytest.raises(ValueError, match=r"file list / selection hash [0-9a-f]{12} -> [0-9a-f]{12}"):
        train(_folder_config(run, folder, 2), resume=True)
    (folder / "cats" / "9.png").rename(folder / "cats" / "0.png")

    os.utime(folder / "cats" / "1.png", (1, 1))  # file times are not part of the fingerprint
    assert train(_folder_config(run, folder, 2), resume=True).step == 2


def test_old_checkpoint_without_fingerprint_resumes_with_a_note(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, "steps=1", "data.classes=[0, 1]"))
    path = run / "checkpoints" / "latest" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    assert state["data"]["images"] == 178 + 182 and state["data"]["classes"] == ["0", "1"]  # digits 0 and 1
    del state["data"]
    torch.save(state, path)
    assert train(tiny_config(run, "steps=2", "data.classes=[0, 1]"), resume=True).step == 2
    notes = [r["message"] for r in read_log(run, "note")]
    assert any("records no data fingerprint" in n for n in notes), notes
