"""The one generation road: shards keyed by their settings, resume, refusal of other settings, overwrite."""
import json

import numpy as np
import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.io.distributed import DistInfo
from domain_guidance.pipelines.generate import (GenerationSettings, Models, SettingsMismatch, generate, parse_labels,
                                                parse_seeds, sample_images, settings_key)
from domain_guidance.pipelines.generate import shards as shards_module
from tests.core.helpers import tiny_dit


@pytest.fixture(scope="module")
def nets():
    pre = tiny_dit(num_classes=10, seed=1, in_channels=1, latent=False)
    ft = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False)
    return ft, pre


def _models(nets, tag="a"):
    ft, pre = nets
    return Models(Denoiser(ft, ft.config), Denoiser(pre, pre.config),
                  identity={"model": {"sha256": f"ft-{tag}"}, "guide": {"sha256": "pre"}})


def _settings(n=10, **kw):
    seeds = list(range(50, 50 + n))
    return GenerationSettings(**{"seeds": seeds, "labels": parse_labels(None, n, 3), "steps": "5", "scale": 2.0,
                                 **kw})


def _read(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _run(nets, out, settings=None, **kw):
    return generate(settings or _settings(), _models(nets), out, shard_size=4, progress=False, **kw)


def test_seed_and_label_parsing():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    with pytest.raises(ValueError, match="duplicates"):
        parse_seeds("0-3,2")
    with pytest.raises(ValueError, match="the end is before the start"):
        parse_seeds("5-1")
    with pytest.raises(ValueError, match="more than 10,000,000 samples"):
        parse_seeds("0-99999999999")  # refused before a list is built (was a MemoryError)
    with pytest.raises(ValueError, match="seeds: 'a' is not an integer"):
        parse_seeds("a-b")
    assert parse_labels(None, 5, 3) == [0, 1, 2, 0, 1]
    assert parse_labels("2", 3, 3) == [2, 2, 2]
    with pytest.raises(ValueError, match="labels: 3 is out of range"):
        parse_labels("0,3", 2, 3)
    with pytest.raises(ValueError, match="labels: 'a' is not an integer"):
        parse_labels("a", 2, 3)


def test_same_files_for_any_batch_size_and_rank_split(nets, tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "barrier", lambda dist: None)  # the real 2-process run is tested via torchrun
    generate(_settings(), _models(nets), tmp_path / "a", batch_size=3, shard_size=4, progress=False)
    # two "ranks" run one after the other; rank 0 merges after both wrote their shards
    for rank in (1, 0):
        generate(_settings(), _models(nets), tmp_path / "b", batch_size=8, shard_size=4, progress=False,
                 dist=DistInfo(rank=rank, world_size=2))
    a, b = _read(tmp_path / "a" / "samples.npz"), _read(tmp_path / "b" / "samples.npz")
    assert a["arr_0"].shape == (10, 8, 8, 1) and a["arr_0"].dtype == np.uint8
    for key in ("labels", "seeds"):
        np.testing.assert_array_equal(a[key], b[key])
    # README: the same seed gives the same image up to float rounding whatever the batch size or process
    # count (another batch size runs other matmul kernels): a uint8 pixel may move by one level at most
    assert np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int)).max() <= 1
    assert a["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert (tmp_path / "a" / "grid.png").stat().st_size > 0


def test_shards_equal_the_in_memory_samples(nets, tmp_path):
    _run(nets, tmp_path)
    x = sample_images(_settings(), _models(nets))
    expected = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(_read(tmp_path / "samples.npz")["arr_0"], expected)


def test_killed_generation_resumes_to_the_same_set(nets, tmp_path, monkeypatch):
    _run(nets, tmp_path / "ref")
    real = shards_module.save_npz

    def dying_save(path, *a, **k):
        if "shard-000001" in str(path):
            raise KeyboardInterrupt("killed")  # dies while the second shard is being written
        return real(path, *a, **k)

    monkeypatch.setattr(shards_module, "save_npz", dying_save)
    with pytest.raises(KeyboardInterrupt):
        _run(nets, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "shards").iterdir()) == ["shard-000000.npz"]
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["status"] == "in progress"
    monkeypatch.setattr(shards_module, "save_npz", real)
    record = _run(nets, tmp_path / "run")
    assert record["generated_now"] == 6  # only the missing shards were generated
    assert (tmp_path / "ref" / "samples.npz").read_bytes() != b""
    for name in ("samples.npz", "shards/shard-000000.npz", "shards/shard-000002.npz"):
        np.testing.assert_array_equal(_read(tmp_path / "ref" / name)["arr_0"], _read(tmp_path / "run" / name)["arr_0"])


def test_same_settings_rerun_generates_nothing_and_keeps_bytes(nets, tmp_path):
    _run(nets, tmp_path)
    before = (tmp_path / "samples.npz").read_bytes(), (tmp_path / "shards" / "shard-000001.npz").read_bytes()
    assert _run(nets, tmp_path)["generated_now"] == 0
    after = (tmp_path / "samples.npz").read_bytes(), (tmp_path / "shards" / "shard-000001.npz").read_bytes()
    assert before[1] == after[1]
    np.testing.assert_array_equal(_read(tmp_path / "samples.npz")["arr_0"], np.load(tmp_path / "samples.npz")["arr_0"])


def test_corrupt_shard_is_regenerated(nets, tmp_path):
    _run(nets, tmp_path)
    good = _read(tmp_path / "samples.npz")["arr_0"]
    (tmp_path / "shards" / "shard-000002.npz").write_bytes(b"truncated")
    assert _run(nets, tmp_path)["generated_now"] == 2
    np.testing.assert_array_equal(_read(tmp_path / "samples.npz")["arr_0"], good)


CHANGES = {
    "method": dict(method="cfg"),
    "scale": dict(scale=3.0),
    "steps": dict(steps="6"),
    "sampler": dict(sampler="ddim"),
    "interval": dict(interval=(500, 999)),
    "channels": dict(channels=1),
    "clip_denoised": dict(clip_denoised=False),
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_rerun_with_other_settings_is_refused_naming_the_field(nets, tmp_path, field):
    _run(nets, tmp_path)
    before = _read(tmp_path / "samples.npz")["arr_0"]
    with pytest.raises(SettingsMismatch, match=rf"settings\.{field}: .* -> .*--overwrite"):
        _run(nets, tmp_path, _settings(**CHANGES[field]))
    np.testing.assert_array_equal(_read(tmp_path / "samples.npz")["arr_0"], before)  # nothing touched


def test_rerun_with_another_model_or_labels_is_refused(nets, tmp_path):
    _run(nets, tmp_path)
    other = _models(nets, tag="b")
    with pytest.raises(SettingsMismatch, match=r"models\.model\.sha256: 'ft-a' -> 'ft-b'"):
        generate(_settings(), other, tmp_path, shard_size=4, progress=False)
    with pytest.raises(SettingsMismatch, match="another seed/label list"):
        _run(nets, tmp_path, _settings(labels=[2] * 10))
    with pytest.raises(SettingsMismatch, match="another seed/label list"):
        _run(nets, tmp_path, GenerationSettings(seeds=list(range(10)), labels=[0] * 10, steps="5", scale=2.0))


def test_overwrite_replaces_samples_and_stale_metrics(nets, tmp_path):
    _run(nets, tmp_path, png_dir=True)
    (tmp_path / "metrics.json").write_text("{}")  # a result computed from the old samples
    record = _run(nets, tmp_path, _settings(method="cfg"), overwrite=True)
    assert record["generated_now"] == 10 and record["settings"]["method"] == "cfg"
    assert not (tmp_path / "metrics.json").exists()
    cfg_images = _read(tmp_path / "samples.npz")["arr_0"]
    _run(nets, tmp_path / "fresh", _settings(method="cfg"))
    np.testing.assert_array_equal(cfg_images, _read(tmp_path / "fresh" / "samples.npz")["arr_0"])


def test_extending_the_seed_list_reuses_full_shards(nets, tmp_path):
    _run(nets, tmp_path, _settings(n=8))
    record = _run(nets, tmp_path, _settings(n=10))
    assert record["generated_now"] == 2  # shards 0-1 (seeds 50-57) kept, shard 2 new
    _run(nets, tmp_path / "direct", _settings(n=10))
    np.testing.assert_array_equal(_read(tmp_path / "samples.npz")["arr_0"],
                                  _read(tmp_path / "direct" / "samples.npz")["arr_0"])


def test_shards_of_an_older_version_without_key_are_refused(nets, tmp_path):
    _run(nets, tmp_path)
    z = _read(tmp_path / "shards" / "shard-000000.npz")
    del z["key"]
    np.savez(tmp_path / "shards" / "shard-000000.npz", **z)
    (tmp_path / "settings.json").unlink()
    with pytest.raises(SettingsMismatch, match="older version without a settings key"):
        _run(nets, tmp_path)


def test_out_that_is_a_file_is_refused(nets, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        _run(nets, tmp_path / "f")


def test_key_ignores_what_cannot_change_pixels(nets):
    m = _models(nets)
    base = settings_key(GenerationSettings(method="unguided", steps="5", seeds=[1], labels=[0]), m)
    same = settings_key(GenerationSettings(method="unguided", scale=7.0, channels=1, steps="5", seeds=[2, 3],
                                           labels=[1, 1]), m)
    assert base == same  # unguided: scale/channels unused; seeds decide which images, not how
    auto = settings_key(_settings(clip_denoised=None), m)
    assert auto == settings_key(_settings(clip_denoised=True), m)  # a pixel model: auto means clip
    assert auto != settings_key(_settings(clip_denoised=False), m)


@pytest.mark.parametrize("kw, message", [
    (dict(interval=(0, 5000)), "outside the sampler's timestep range 0..999"),
    (dict(interval=(-10, 500)), "outside the sampler's timestep range"),
    (dict(interval=(990, 995)), "no sampling step falls in"),  # 5 DDPM steps visit 0, 250, 500, 749, 999
    (dict(interval=(700, 100)), "LO <= HI"),
    (dict(steps="1"), "needs at least 2"),
    (dict(sampler="ddim", steps="1"), "steps: "),
    (dict(eta=0.5), "applies to the ddim sampler only"),
    (dict(eta=float("nan"), sampler="ddim"), "eta: expected a finite number"),
    (dict(scale=float("inf")), "finite"),
    (dict(channels=0), "channels: expected a count >= 1"),
    (dict(sampler="no-such-sampler"), "sampler: unknown sampler"),
])
def test_settings_refuse_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        _settings(**kw)


def test_velocity_model_is_refused_by_the_eps_samplers(nets, tmp_path):
    ft, pre = nets
    sit = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False, prediction="velocity")
    models = Models(Denoiser(sit, sit.config))
    with pytest.raises(ValueError, match="integrates eps predictions, but the model predicts 'velocity'"):
        sample_images(_settings(method="unguided", n=2), models)
    out = tmp_path / "sit"
    with pytest.raises(ValueError, match="integrates eps predictions"):
        generate(_settings(method="unguided", n=2), models, out, progress=False)
    assert not out.exists()  # refused before anything was written: a corrected rerun is not blocked


def test_sampler_options_are_checked_keyed_and_reach_the_sampler(nets):
    with pytest.raises(ValueError, match=r"options: \['rtol'\] are not options of the ddpm sampler; it takes none"):
        _settings(options={"rtol": 1e-3})
    with pytest.raises(ValueError, match=r"options: \['bogus'\] are not options of the sde-euler sampler; it takes "
                                         r"\[.*'diffusion_form'"):
        GenerationSettings(method="unguided", sampler="sde-euler", steps="10", options={"bogus": 1})
    sit = tiny_dit(num_classes=3, seed=2, in_channels=1, latent=False, prediction="velocity", std=0.1)
    models = Models(Denoiser(sit, sit.config), identity={"model": {"sha256": "sit"}})

    def sde(**options):
        return GenerationSettings(method="unguided", sampler="sde-euler", steps="10", seeds=[1, 2], labels=[0, 1],
                                  options=options)

    default, other = sde(), sde(diffusion_form="constant")
    assert settings_key(default, models) != settings_key(other, models)
    a, b = sample_images(default, models, decode=False), sample_images(other, models, decode=False)
    assert not torch.equal(a, b)  # the option reached the sampler
    assert torch.equal(a, sample_images(sde(diffusion_form="sigma"), models, decode=False))  # sigma is the default
