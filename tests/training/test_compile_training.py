"""`compile=true` (dog finetune --compile): the same losses as eager training, and resumable either way."""
from __future__ import annotations

import numpy as np
import pytest

from domain_guidance.pipelines.training import train
from domain_guidance.pipelines.training.logging import read_log

from .conftest import tiny_config


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    common = ["steps=3", "batch_size=8", "data.classes=[0, 1]", "log_every=1", "ckpt_every=3"]
    eager = train(tiny_config(tmp_path / "eager", *common))
    compiled = train(tiny_config(tmp_path / "compiled", *common, "compile=true"))
    a = [r["loss"] for r in read_log(eager.run_dir, "train")]
    b = [r["loss"] for r in read_log(compiled.run_dir, "train")]
    assert len(a) == len(b) == 3
    notes = [str(r) for r in read_log(compiled.run_dir, "note")]
    if any("--compile" in str(n) for n in notes):  # no compiler here: the fallback ran eagerly
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(b, a, rtol=1e-4)  # same arithmetic, another kernel order
    # compile is free to change on resume (like the device)
    more = train(tiny_config(tmp_path / "compiled", *common[1:], "steps=4"), resume=True)
    assert more.step == 4
