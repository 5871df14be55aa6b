"""Results that overwrite or merge what they should not (issue 20, family 5).

Every result is keyed by everything that decides it (samples' content, reference's content, extractor
protocol with precision, metric settings); a result file keeps every key's record; incomplete sample
sets and samples of another shape than the reference are refused unless asked.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from domain_guidance.cli import main
from domain_guidance.cli.evaluate import _samples_path
from domain_guidance.pipelines.generate.sample_sets import sample_set
from domain_guidance.pipelines.metrics import evaluate
from domain_guidance.pipelines.metrics.stats import compute_stats, save_stats
from tests.metrics.helpers import TinyExtractor, random_images, write_folder


class PrecisionExtractor(TinyExtractor):
    """The tiny extractor at a named feature precision (what a bf16 Inception records)."""

    def __init__(self, precision: str) -> None:
        super().__init__()
        self.precision = precision

    def protocol(self) -> dict:
        return {**super().protocol(), "precision": self.precision}


def _eval(samples, reference, out=None, ext=None, **kw):
    return evaluate(samples, reference, kw.pop("metrics", ("fid",)), extractors={"inception": ext or TinyExtractor()},
                    output=out, **kw)


def test_every_deciding_input_gets_its_own_record(tmp_path):
    """The mechanism: each input that decides the numbers changes the key, and no record replaces another."""
    a, b, ref, ref2 = (random_images(6, seed=s) for s in (0, 1, 2, 3))
    out = tmp_path / "a.metrics.json"
    first = _eval(a, ref, out)
    variants = {
        "samples": lambda: _eval(b, ref, out),
        "reference": lambda: _eval(a, ref2, out),
        "extractor weights": lambda: _eval(a, ref, out, TinyExtractor("w1")),
        "precision": lambda: _eval(a, ref, out, PrecisionExtractor("bf16")),
        "fd_method": lambda: _eval(a, ref, out, fd_method="eigh"),
        "metrics": lambda: _eval(a, ref, out, metrics=("fid", "prdc")),
        "prdc_k": lambda: _eval(a, ref, out, metrics=("fid", "prdc"), prdc_k=3),
    }
    keys = {"first": first["key"]}
    for name, run in variants.items():
        keys[name] = run()["key"]
        saved = json.loads(out.read_text())
        assert saved["key"] == keys[name], name  # the latest at the top level
        assert set(saved["records"]) == set(keys.values()), name  # every earlier record kept
    assert len(set(keys.values())) == len(keys)
    saved = json.loads(out.read_text())
    assert saved["records"][first["key"]]["metrics"] == first["metrics"]
    # what does not decide the numbers (batch size) keeps the key: the record is refreshed, not added
    again = _eval(a, ref, out, batch_size=4)
    assert again["key"] == first["key"] and len(json.loads(out.read_text())["records"]) == len(keys)


def test_scoring_against_another_reference_keeps_the_first_result(tmp_path):
    """Regression: scoring one set against another reference replaced its metrics."""
    a = random_images(6, seed=0)
    out = tmp_path / "m.json"
    one, two = _eval(a, random_images(6, seed=2), out), _eval(a, random_images(6, seed=3), out)
    records = json.loads(out.read_text())["records"]
    assert records[one["key"]]["metrics"] == one["metrics"] and records[two["key"]]["metrics"] == two["metrics"]
    assert one["metrics"] != two["metrics"]


def test_a_folder_and_an_npz_of_the_same_name_keep_both_results(tmp_path):
    """Regression: `dog evaluate F/` and `dog evaluate F.npz` both wrote F.metrics.json, one replacing the other."""
    folder = write_folder(tmp_path / "F", random_images(5, seed=4))
    npz = tmp_path / "F.npz"
    np.savez(npz, arr_0=random_images(5, seed=5).permute(0, 2, 3, 1).numpy())
    out_f, out_n = _samples_path(str(folder))[2], _samples_path(str(npz))[2]
    assert out_f == out_n == tmp_path / "F.metrics.json"
    ref = random_images(6, seed=2)
    from_folder, from_npz = _eval(folder, ref, out_f), _eval(npz, ref, out_n)
    records = json.loads(out_f.read_text())["records"]
    assert records[from_folder["key"]]["samples"]["source"] == str(folder)
    assert records[from_npz["key"]]["samples"]["source"] == str(npz)


def test_fp32_evaluation_refuses_bf16_reference_statistics_and_records_precision(tmp_path):
    """Regression: cached bf16 statistics were used by an fp32 evaluation (FID 79.27 vs 80.39), unrecorded."""
    ref = random_images(6, seed=2)
    stats = save_stats(tmp_path / "ref-bf16.npz", compute_stats(ref, PrecisionExtractor("bf16")))
    with pytest.raises(ValueError, match=r"precision: cached 'bf16' != requested 'fp32'"):
        _eval(random_images(6), stats)
    fp32 = save_stats(tmp_path / "ref.npz", compute_stats(ref, TinyExtractor()))  # no precision: fp32
    with pytest.raises(ValueError, match=r"precision: cached 'fp32' != requested 'bf16'"):
        _eval(random_images(6), fp32, ext=PrecisionExtractor("bf16"))
    assert _eval(random_images(6), fp32)["settings"]["precision"] == "fp32"


def test_samples_of_another_shape_than_the_reference_are_refused_unless_asked(tmp_path):
    """Regression: 8x8 grey samples were scored against a 16x16 RGB reference without a word."""
    grey, rgb = random_images(6, c=1, h=8, w=8), random_images(6, c=3, h=16, w=16, seed=1)
    with pytest.raises(ValueError, match=r"samples are 1x8x8 .* but the reference .* is 3x16x16.*"
                                         r"--allow-shape-mismatch"):
        _eval(grey, rgb)
    result = _eval(grey, rgb, allow_shape_mismatch=True)
    assert result["warnings"] == [w for w in result["warnings"] if "1x8x8" in w and "3x16x16" in w] != []


def _sample_dir(root, status, seeds, npz_seeds=None, pngs=()):
    """A `dog sample` output as a run leaves it: settings.json, and samples.npz / images/ as far as it got."""
    root.mkdir(parents=True)
    (root / "settings.json").write_text(json.dumps({"status": status, "settings": {"seeds": seeds}}))
    if npz_seeds is not None:
        imgs = random_images(len(npz_seeds), c=1, h=8, w=8).permute(0, 2, 3, 1).numpy()
        np.savez(root / "samples.npz", arr_0=imgs, seeds=np.array(npz_seeds), labels=np.zeros(len(npz_seeds)))
    if pngs:
        write_folder(root / "images", random_images(len(pngs), c=1, h=8, w=8))
        for i, s in enumerate(pngs):
            (root / "images" / f"{i:03d}.png").rename(root / "images" / f"{s:06d}.png")
    return root


def test_incomplete_sample_sets_are_refused_unless_asked(tmp_path, capsys):
    """Regression: a killed --png run and a killed seed extension were scored as if whole."""
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=random_images(4, c=1, h=8, w=8).permute(0, 2, 3, 1).numpy())
    killed_png = _sample_dir(tmp_path / "png", "in progress", [0, 1, 2, 3], pngs=[0, 1])
    extension = _sample_dir(tmp_path / "ext", "in progress", list(range(8)), npz_seeds=[0, 1, 2, 3])
    mixed = _sample_dir(tmp_path / "mixed", "complete", list(range(8)), npz_seeds=[0, 1, 2, 3])
    for given in (killed_png / "images", killed_png, extension, extension / "samples.npz", mixed):
        assert sample_set(given).incomplete is not None, given
        assert main(["evaluate", str(given), str(ref), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "--allow-incomplete" in err and str(given).rstrip("/") in err, err
    whole = _sample_dir(tmp_path / "whole", "complete", [0, 1, 2, 3], npz_seeds=[0, 1, 2, 3], pngs=[0, 1, 2, 3])
    assert sample_set(whole).incomplete is None and sample_set(whole / "images").incomplete is None
    assert not list(tmp_path.rglob("*metrics.json"))  # nothing was scored
