"""benchmarks/gpu_check.sh runs end to end on a CPU with the tiny plan (the GPU run uses the same code)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_CHECK_TIMEOUT": "400"}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--device", "cpu", "--no-compile",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = r["sampling"]["rows"]
    assert set(rows) == {f"{p}/{m}" for p in ("fp32", "bf16") for m in ("cfg", "dog", "dog-lora")}
    steps = r["plan"]["steps"]
    for name, row in rows.items():
        assert row["evaluations_per_image"] == 2 * steps  # counted: two branches per step for every guided method
        assert row["images_per_s"] > 0 and 0 < row["mfu_measured_peak"]
        assert row["mfu_nominal_peak"] is None  # no data-sheet peak for a CPU
    assert r["sampling"]["gflop_per_forward_sample"] > 0
    assert len(r["finetuning"]) == 4 and all(v["steps_per_s"] > 0 for v in r["finetuning"].values())
    assert r["memory"]["dog-lora"]["weights_mb"] < r["memory"]["dog"]["weights_mb"]  # one network instead of two
    text = (tmp_path / "gpu_check.md").read_text()
    assert "DoG / CFG images/s" in text and "latent cache, checkpointing on" in text
