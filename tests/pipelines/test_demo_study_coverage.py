"""``dog demo --study`` on its coverage axis: the covered and outside glyph targets, one source, recomputed."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from domain_guidance.io.data import load_builtin
from domain_guidance.pipelines.demo import classifier as judge
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.demo.domains import get_target
from domain_guidance.pipelines.demo.study import StudyConfig, run_study
from domain_guidance.pipelines.generate import load_samples

SHAPES = {"covered": [0, 1, 2, 3], "outside": [8, 9, 10, 11]}


@pytest.mark.slow
def test_coverage_axis_maps_both_glyph_targets_from_one_source(tmp_path: Path) -> None:
    base = DemoConfig(out=str(tmp_path), pretrain=True, pretrain_steps=20, model="T/2",
                      model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}, finetune_batch=8,
                      images_per_class=5, w=[2.0], dog_interval=None, samples=8, seeds=[0, 1], steps=4, batch_size=8,
                      reference_images=8, classifier_epochs=0.1, kid_subsets=5, progress=False, fid=False)
    study = StudyConfig(base=base, finetune_steps=[5], images_per_class=[5])
    assert study.targets == ["covered", "outside"]
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # few images -> rank-deficient covariances
        run_study(study)
    saved = json.loads((tmp_path / "study.json").read_text())
    assert [c["target"] for c in saved["cells"]] == ["covered", "outside"]
    # one source, pre-trained once, for both targets
    sources = {t: rec["source"]["checkpoint"] for t, rec in saved["targets"].items()}
    assert sources["covered"] == sources["outside"] and not (tmp_path / "outside" / "source").exists()
    for cell in saved["cells"]:
        target, shapes = cell["target"], SHAPES[cell["target"]]
        assert cell["finetune"]["checkpoint"].startswith(str(tmp_path / target / "cells"))
        # the fine-tune trained on the target's blue shapes, the floors are real blue images of those shapes
        train = load_builtin("glyphs-blue", resolution=16, classes=shapes, split="train")
        for f in cell["floors"]:
            with np.load(f["images"]) as z:
                for im, y in zip(z["images"], z["labels"]):
                    assert any(np.array_equal(im, t) for t in train.images[train.labels == y])
        # class match and the exact domain rate of DoG and CFG, recomputed from the saved samples
        model, _ = judge.train_classifier(tmp_path / target, 16, 0.1, 128, progress=False, target=get_target(target))
        for method in ("dog", "cfg"):
            runs = [r for r in cell["runs"] if r["method"] == method]
            match, blue = [], []
            for r in runs:
                images, labels = load_samples(r["samples"])
                pred = judge.predict(model, judge.uint8_to_input(images, 3)).argmax(1).numpy()
                match.append(float((pred == np.array(shapes)[labels]).mean()))
                blue.append(float(get_target(target).exact_domain(images).mean()))
            for metric, values in (("class_match", match), ("domain_exact", blue)):
                entry = next(e for e in saved["map"] if e["target"] == target and e["metric"] == metric)
                assert entry[method] == pytest.approx(np.mean(values), abs=1e-12)
    report = (tmp_path / "report.md").read_text()
    assert "By target: `covered`:" in report and "`outside`: DoG resolved better in" in report
    assert (tmp_path / "study-map-w2-covered.png").is_file() and (tmp_path / "study-map-w2-outside.png").is_file()
