import numpy as np
import pytest

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.io.distributed import DistInfo
from domain_guidance.pipelines import generate as gen
from domain_guidance.pipelines.generate import GenerationSettings, generate, parse_labels, parse_seeds
from tests.core.helpers import tiny_dit


def _dog():
    pre = tiny_dit(num_classes=10, seed=1, in_channels=1, latent=False)
    ft = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False)
    return build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=2.0)


def _settings(n=10, shard=4):
    seeds = list(range(50, 50 + n))
    return GenerationSettings(seeds=seeds, labels=parse_labels(None, n, 3), steps="5", clip_denoised=True,
                              shard_size=shard)


def _read(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_seed_and_label_parsing():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    with pytest.raises(ValueError, match="duplicates"):
        parse_seeds("0-3,2")
    with pytest.raises(ValueError, match="end before start"):
        parse_seeds("5-1")
    assert parse_labels(None, 5, 3) == [0, 1, 2, 0, 1]
    assert parse_labels("2", 3, 3) == [2, 2, 2]
    with pytest.raises(ValueError, match="label 3 out of range"):
        parse_labels("0,3", 2, 3)


def test_same_files_for_any_batch_size_and_rank_split(tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "barrier", lambda dist: None)  # the real 2-process run is tested via torchrun
    g = _dog()
    generate(g, _settings(), (1, 8, 8), tmp_path / "a", batch_size=3, progress=False)
    # two "ranks" run one after the other; rank 0 merges after both wrote their shards
    generate(g, _settings(), (1, 8, 8), tmp_path / "b", batch_size=8, progress=False,
             dist=DistInfo(rank=1, world_size=2))
    generate(g, _settings(), (1, 8, 8), tmp_path / "b", batch_size=8, progress=False,
             dist=DistInfo(rank=0, world_size=2))
    a, b = _read(tmp_path / "a" / "samples.npz"), _read(tmp_path / "b" / "samples.npz")
    assert a["arr_0"].shape == (10, 8, 8, 1) and a["arr_0"].dtype == np.uint8
    for key in ("arr_0", "labels", "seeds"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert (tmp_path / "a" / "grid.png").stat().st_size > 0


def test_killed_generation_resumes_to_the_same_set(tmp_path, monkeypatch):
    g = _dog()
    generate(g, _settings(), (1, 8, 8), tmp_path / "ref", progress=False)
    calls = {"n": 0}
    real = gen.save_npz

    def dying_save(path, *a, **k):
        if "shard-000001" in str(path):
            raise KeyboardInterrupt("killed")  # dies while the second shard is being written
        calls["n"] += 1
        return real(path, *a, **k)

    monkeypatch.setattr(gen, "save_npz", dying_save)
    with pytest.raises(KeyboardInterrupt):
        generate(g, _settings(), (1, 8, 8), tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "shards").iterdir()) == ["shard-000000.npz"]
    monkeypatch.setattr(gen, "save_npz", real)
    summary = generate(g, _settings(), (1, 8, 8), tmp_path / "run", progress=False)
    assert summary["generated_now"] == 6  # only the missing shards were generated
    np.testing.assert_array_equal(_read(tmp_path / "ref" / "samples.npz")["arr_0"],
                                  _read(tmp_path / "run" / "samples.npz")["arr_0"])


def test_corrupt_shard_is_regenerated(tmp_path):
    g = _dog()
    generate(g, _settings(), (1, 8, 8), tmp_path, progress=False)
    good = _read(tmp_path / "samples.npz")["arr_0"]
    (tmp_path / "shards" / "shard-000002.npz").write_bytes(b"truncated")
    summary = generate(g, _settings(), (1, 8, 8), tmp_path, progress=False)
    assert summary["generated_now"] == 2
    np.testing.assert_array_equal(_read(tmp_path / "samples.npz")["arr_0"], good)
