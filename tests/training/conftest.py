"""Fixtures of the training tests: tiny configs (hidden 32, depth 1, 8x8 digits), a saved tiny base, a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domain_guidance.core.models import DiT, dit_config
from domain_guidance.pipelines.training import TrainConfig, resolve_config

REPO = Path(__file__).resolve().parents[2]
TINY_NET = 'model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}'


def tiny_config(out: Path, *sets: str, preset: str | None = "cpu-tiny") -> TrainConfig:
    """cpu-tiny shrunk further: hidden 32, depth 1, batch 8, no bar/TensorBoard/grids unless asked."""
    base = [f"out={out}", TINY_NET, "batch_size=8", "progress=false", "tensorboard=false", "sample_every=0",
            "log_every=1", "ckpt_every=1000", "device=cpu", "dist_timeout_s=60"]
    return resolve_config(preset, sets=base + list(sets))


def cli_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return env


def run_cli(args: list[str], *, nproc: int = 1, threads: int | None = None, timeout: float = 150
            ) -> subprocess.CompletedProcess:
    """``dog ARGS`` in a subprocess (under torchrun when nproc > 1); never hangs past ``timeout``."""
    threads = threads if threads is not None else 1
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "domain_guidance.cli", *args]
    else:
        cmd = [sys.executable, "-m", "domain_guidance.cli", *args]
    proc = subprocess.Popen(cmd, env=cli_env(threads), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the whole group: torchrun and its workers
        out, _ = proc.communicate()
        pytest.fail(f"`{' '.join(cmd)}` did not finish in {timeout} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pixel-space 8x8x1 DiT (hidden 32, depth 1, 10 classes + null) with random non-zero weights, in our format."""
    from domain_guidance.io.checkpoints import save_checkpoint

    cfg = dit_config("T/2", input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=1, num_heads=2,
                     latent=False, vae=None)
    gen = torch.Generator().manual_seed(123)
    net = DiT(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    path = tmp_path_factory.mktemp("base") / "tiny-base"
    save_checkpoint(path, net, cfg)
    return path
