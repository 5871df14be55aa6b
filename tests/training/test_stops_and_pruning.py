"""keep-last-N checkpoint pruning, and the stop on an infinite loss or a non-finite gradient
(the NaN-loss case is in test_resume.py; these inject through the real loss and backward pass)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from domain_guidance.core.diffusion.gaussian import GaussianDiffusion
from domain_guidance.pipelines.training import NonFiniteLossError, find_latest, load_train_state, train
from domain_guidance.pipelines.training.logging import read_log
from domain_guidance.pipelines.training.state import prune

from .conftest import tiny_config


def checkpoint_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def latest_target(run: Path) -> str:
    pointer = run / "checkpoints" / "latest"
    return os.readlink(pointer) if pointer.is_symlink() else pointer.read_text().strip()


@pytest.mark.parametrize("keep", [1, 2])
def test_keep_last_n_after_n_plus_k_saves_across_a_resume(tmp_path, keep):
    run = tmp_path / "run"
    train(tiny_config(run, "steps=3", "ckpt_every=1", f"keep_last={keep}"))  # 3 saves ...
    assert checkpoint_names(run) == ["latest"] + [f"step_{s:07d}" for s in range(4 - keep, 4)]
    result = train(tiny_config(run, "steps=5", "ckpt_every=1", f"keep_last={keep}"), resume=True)  # ... + 2
    expected = [f"step_{s:07d}" for s in range(6 - keep, 6)]  # exactly the last N of the 5 saves
    assert checkpoint_names(run) == ["latest"] + expected
    assert latest_target(run) == "step_0000005" and result.checkpoint.name == "step_0000005"
    for name in expected:  # what is left is complete and says which step it holds
        assert load_train_state(run / "checkpoints" / name)["step"] == int(name.split("_")[1])
    assert [r["step"] for r in read_log(run, "checkpoint")] == [1, 2, 3, 4, 5]


def test_prune_never_deletes_the_checkpoint_latest_names(tmp_path):
    """After resuming from an older checkpoint, ``latest`` may name one that is not among the newest N."""
    root = tmp_path / "checkpoints"
    for s in (1, 2, 3, 4):
        d = root / f"step_{s:07d}"
        d.mkdir(parents=True)
        (d / "train_state.pt").write_bytes(b"x")
    (root / "step_0000005").mkdir()  # incomplete (no train_state.pt): neither counted nor deleted
    os.symlink("step_0000002", root / "latest")
    removed = prune(tmp_path, keep_last=1)
    assert sorted(p.name for p in removed) == ["step_0000001", "step_0000003"]
    assert checkpoint_names(tmp_path) == ["latest", "step_0000002", "step_0000004", "step_0000005"]


def _inject(monkeypatch, at_call: int, how: str) -> None:
    """Make the ``at_call``-th training step's loss infinite, or its gradient non-finite with a finite loss."""
    real = GaussianDiffusion.training_losses
    calls = []

    def losses(self, model_output, *args, **kwargs):
        calls.append(1)
        if len(calls) == at_call:
            if how == "loss":
                terms = real(self, model_output, *args, **kwargs)
                return {**terms, "loss": terms["loss"] * float("inf")}  # positive terms: +inf
            model_output.register_hook(lambda g: g * float("inf"))  # backward gives inf / nan gradients
        return real(self, model_output, *args, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, "training_losses", losses)


@pytest.mark.parametrize("how, step, saved, pattern", [
    ("loss", 6, [2, 4], r"non-finite loss \(inf\) at step 6: stopping without saving; the last good checkpoint is "
                        r".*step_0000004 \(step 4\); fix the cause .* continue with --resume"),
    ("grad", 3, [2], r"non-finite gradient norm \((nan|inf)\) at step 3: stopping without saving; "
                     r"the last good checkpoint is .*step_0000002 \(step 2\)"),
    ("grad", 1, [], r"non-finite gradient norm \((nan|inf)\) at step 1: stopping without saving; "
                    r"no checkpoint was saved before it"),
])
def test_non_finite_loss_or_gradient_stops_and_saves_nothing_after(tmp_path, monkeypatch, how, step, saved, pattern):
    run = tmp_path / "run"
    _inject(monkeypatch, step, how)
    with pytest.raises(NonFiniteLossError, match=pattern):
        train(tiny_config(run, "steps=8", "ckpt_every=2", "keep_last=5"))
    monkeypatch.undo()
    names = checkpoint_names(run) if (run / "checkpoints").exists() else []
    assert names == (["latest"] + [f"step_{s:07d}" for s in saved] if saved else [])  # nothing after the stop
    if saved:
        state = load_train_state(find_latest(run))
        assert state["step"] == saved[-1]
        assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["step"] for r in read_log(run, "train")] == list(range(1, step))  # the bad step is not logged
    stop = read_log(run, "nonfinite")
    assert len(stop) == 1 and stop[0]["step"] == step
    assert stop[0]["what"] == ("loss" if how == "loss" else "gradient norm")
    # the run resumes from the last good checkpoint once the cause is gone
    if saved:
        resumed = train(tiny_config(run, "steps=8", "ckpt_every=2", "keep_last=5"), resume=True)
        assert resumed.step == 8 and torch.isfinite(torch.tensor(resumed.last_loss))
