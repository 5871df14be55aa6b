"""A write killed half-way never replaces a good checkpoint."""
from __future__ import annotations

import os

import pytest
import torch

from domain_guidance.io import checkpoint_files, checkpoints as ck
from domain_guidance.io.checkpoint_files import CheckpointError
from tests.core.helpers import tiny_dit
from tests.io.checkpoint_helpers import assert_same_weights


def _crashing_save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"\x00" * 100)  # a partial file, then the process "dies"
    raise OSError("disk full")


@pytest.mark.parametrize("name", ["ckpt", "ckpt.safetensors"])
def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch, name):
    good = tiny_dit(seed=0)
    path = ck.save_model(tmp_path / name, good, metadata={"step": 1})
    monkeypatch.setattr(ck, "save_file", _crashing_save_file)
    with pytest.raises(OSError, match="disk full"):
        ck.save_model(path, tiny_dit(seed=1), metadata={"step": 2})
    got = ck.load_model(path)
    assert_same_weights(got.net, good)
    assert got.metadata == {"step": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temporaries cleaned up


def test_interrupted_directory_swap_points_at_previous(tmp_path, monkeypatch):
    path = ck.save_model(tmp_path / "ckpt", tiny_dit())
    real_rename, calls = os.rename, []

    def rename(src, dst):  # the old checkpoint moves aside, then the process dies
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint_files.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        ck.save_model(path, tiny_dit(seed=1))
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"interrupted save left the previous checkpoint at .*\.ckpt\.old-"):
        ck.load_model(path)
    assert_same_weights(ck.load_model(calls[0]).net, tiny_dit())


def test_never_replaces_an_unrelated_directory(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        ck.save_model(tmp_path / "results", tiny_dit())
    assert (tmp_path / "results" / "notes.txt").read_text() == "keep me"
    path = ck.save_model(tmp_path / "ckpt", tiny_dit())
    (path / "README.md").write_text("mine")  # a checkpoint dir with a foreign file is not replaced either
    with pytest.raises(CheckpointError, match=r"holds \['README.md'\]"):
        ck.save_model(path, tiny_dit(seed=1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        ck.save_model(tmp_path / "file", tiny_dit())


def test_refuses_to_save_mismatched_weights(tmp_path):
    net = tiny_dit()
    with pytest.raises(CheckpointError, match=r"(?s)refusing to save.*4 label rows.*y_embedder\.embedding_table\.weight expected \[4, 64\] found \[11, 64\]"):
        ck.save_checkpoint(tmp_path / "x", net, net.config.replace(num_classes=3))
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []  # no temporaries either
    assert_same_weights(net, tiny_dit())  # the refused save left the network untouched
    assert net.pos_embed.shape == (1, 16, 64) and not torch.equal(net.pos_embed, torch.zeros_like(net.pos_embed))
