"""``dog demo --study``: the DoG-vs-CFG map and the paper's ablations, a tiny run recomputed from its saved samples."""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from domain_guidance.core.guidance import GuidedDenoiser, build_guided_denoiser
from domain_guidance.io.images import to_nhwc, to_uint8
from domain_guidance.pipelines.demo import analysis
from domain_guidance.pipelines.demo import classifier as judge
from domain_guidance.pipelines.demo.blend import BlendedUncond
from domain_guidance.pipelines.demo.config import DemoConfig
from domain_guidance.pipelines.demo.study import StudyConfig, map_entries, run_study
from domain_guidance.pipelines.generate import GenerationSettings, load_models, load_samples, sample_images
from tests.demo.test_demo import _frechet

TARGETS = np.array([6, 7, 8, 9])


def tiny_study(out: Path) -> StudyConfig:
    """The animal target: a T/2-sized source pre-trained for 30 steps; a 2 x 1 map; every ablation at two points;
    judge metrics only."""
    base = DemoConfig(out=str(out), target="animal", pretrain=True, pretrain_steps=30, model="T/2",
                      model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}, finetune_steps=10,
                      finetune_batch=8, images_per_class=5, w=[2.0], dog_interval=None, samples=6, seeds=[0, 1],
                      steps=5, batch_size=8, reference_images=8, classifier_epochs=0.2, kid_subsets=7,
                      progress=False, fid=False)
    return StudyConfig(base=base, finetune_steps=[5, 10], images_per_class=[5],
                       ablations=["steps", "uncond-guide", "nine-grid"], ablation_w=2.0, sampling_steps=[3, 5],
                       uncond_guide_steps=[5, 10], grid_w=[2.0, 3.0], grid_images=4)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, dict, Path]:
    out = tmp_path_factory.mktemp("study")
    cfg = tiny_study(out)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # few images -> rank-deficient covariances
        results = run_study(cfg)
    return cfg, results, out


def _judge(out: Path) -> judge.SmallCNN:
    model, _ = judge.train_classifier(out, 16, 0.2, 128, progress=False)  # the study's cached judge
    return model


def _class_match(model: judge.SmallCNN, images: np.ndarray, labels: np.ndarray) -> float:
    pred = judge.predict(model, judge.uint8_to_input(images)).argmax(1).numpy()
    return float((pred == TARGETS[labels]).mean())


def _mean_sd(v: list[float]) -> tuple[float, float]:
    return float(np.mean(v)), float(np.std(v, ddof=1))


@pytest.mark.slow
def test_map_cells_are_recomputed_from_the_saved_samples(study) -> None:
    cfg, results, out = study
    saved = json.loads((out / "study.json").read_text())
    assert [(c["finetune_steps"], c["images_per_class"]) for c in saved["cells"]] == [(5, 5), (10, 5)]
    model = _judge(out)
    ref = None
    for cell in saved["cells"]:
        runs = {(r["method"], r["seed"]): r for r in cell["runs"]}
        assert set(runs) == {(m, s) for m in ("unguided", "cfg", "dog") for s in (0, 1)}
        values: dict[str, dict[str, list[float]]] = {"dog": {}, "cfg": {}}
        for method in ("dog", "cfg"):
            for seed in (0, 1):
                images, labels = load_samples(runs[(method, seed)]["samples"])
                assert images.shape == (6, 16, 16, 1)
                if ref is None:
                    from domain_guidance.pipelines.demo.run import reference_images

                    ref = judge.features(model, judge.uint8_to_input(reference_images(cfg.base)))
                feats = judge.features(model, judge.uint8_to_input(images))
                values[method].setdefault("class_match", []).append(_class_match(model, images, labels))
                values[method].setdefault("fd_classifier", []).append(_frechet(feats, ref))
        floors = [np.load(f["images"]) for f in cell["floors"]]
        floor_match = [_class_match(model, z["images"], z["labels"]) for z in floors]
        for metric in ("class_match", "fd_classifier"):
            entry = next(e for e in saved["map"] if e["metric"] == metric and e["w"] == 2.0
                         and (e["finetune_steps"], e["images_per_class"]) == (cell["finetune_steps"], 5))
            (md, sd), (mc, sc) = _mean_sd(values["dog"][metric]), _mean_sd(values["cfg"][metric])
            assert entry["dog"] == pytest.approx(md, rel=1e-5, abs=1e-9)
            assert entry["cfg"] == pytest.approx(mc, rel=1e-5, abs=1e-9)
            pooled = math.sqrt((sd ** 2 + sc ** 2) / 2)  # equal group sizes
            assert entry["pooled_std"] == pytest.approx(pooled, rel=1e-5, abs=1e-9)
            assert entry["resolved"] == (abs(md - mc) > 2 * pooled)
            if mc != 0:
                assert entry["rel_change"] == pytest.approx(100 * (md - mc) / abs(mc), rel=1e-5, abs=1e-6)
        floor_entry = next(e for e in saved["map"] if e["metric"] == "class_match"
                           and e["finetune_steps"] == cell["finetune_steps"])
        assert floor_entry["floor"] == pytest.approx(np.mean(floor_match))
    report = (out / "report.md").read_text()
    cm = next(e for e in saved["map"] if e["metric"] == "fd_classifier" and e["finetune_steps"] == 10)
    row = next(line for line in report.splitlines() if line.startswith("| 10 |") and "floor" in line
               and f"{cm['rel_change']:+.1f}%" in line)
    assert ("not resolved" in row) == (not cm["resolved"])
    assert (out / "study-map-w2.png").stat().st_size > 5000


def test_map_entries_signs_and_resolution_on_known_values() -> None:
    def runs(method: str, vals: list[float]) -> list[dict]:
        return [{"finetune": "ld0.1", "method": method, "w": 1.5, "interval": None, "seed": i, "fid": v,
                 "class_match": 0.5} for i, v in enumerate(vals)]

    real = [{"finetune": None, "method": "real", "w": None, "interval": None, "seed": i, "fid": v,
             "class_match": 0.9} for i, v in enumerate([5.0, 6.0, 7.0])]
    summary = analysis.summarize(runs("dog", [10, 11, 12]) + runs("cfg", [14, 15, 16]) + real)
    cell = {"finetune_steps": 250, "images_per_class": 10, "summary": summary,
            "comparisons": analysis.comparisons(summary, "ld0.1")}
    entries = {e["metric"]: e for e in map_entries([cell], [1.5])}
    fid, match = entries["fid"], entries["class_match"]
    assert fid["rel_change"] == pytest.approx(100 * (11 - 15) / 15)
    assert fid["resolved"] and fid["better"] == "dog" and fid["pooled_std"] == pytest.approx(1.0)
    assert fid["floor"] == pytest.approx(6.0) and fid["floor_std"] == pytest.approx(1.0)
    assert match["rel_change"] == 0.0 and not match["resolved"] and match["better"] is None
    close = analysis.summarize(runs("dog", [10, 12, 14]) + runs("cfg", [11, 13, 15]))
    e = next(e for e in map_entries([{**cell, "summary": close, "comparisons": analysis.comparisons(close, "ld0.1")}],
                                    [1.5]) if e["metric"] == "fid")
    assert not e["resolved"] and e["better"] is None and e["floor"] is None


@pytest.mark.slow
def test_rerun_reads_cells_and_ablations_back(study) -> None:
    cfg, results, out = study
    cell_json = out / "cells" / "steps10-ipc5" / "cell.json"
    ckpt = next((out / "cells" / "steps10-ipc5" / "finetune-ld0.1" / "checkpoints").glob("step_*"))
    stamps = {p: os.stat(p).st_mtime_ns for p in (cell_json, ckpt, out / "cells" / "steps10-ipc5" / "ablations" /
                                                  "steps.json")}
    again = run_study(cfg)
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # read back, not recomputed
    assert again["map"] == results["map"]
    assert again["ablations"]["steps"]["summary"] == results["ablations"]["steps"]["summary"]
    # a cell interrupted after its stages ran (no cell.json yet) resumes them: the fine-tune and every sample set
    # are found, not redone, and the numbers come out the same
    (out / "cells" / "steps10-ipc5" / "cell.json").unlink()
    resumed = run_study(cfg)
    assert os.stat(ckpt).st_mtime_ns == stamps[ckpt]
    cell = next(c for c in resumed["cells"] if c["finetune_steps"] == 10)
    for r in cell["runs"]:
        assert json.loads((Path(r["samples"]).parent / "settings.json").read_text())["generated_now"] == 0
    assert resumed["map"] == results["map"]


@pytest.mark.slow
def test_steps_ablation_samples_and_comparisons(study) -> None:
    cfg, results, out = study
    rec = results["ablations"]["steps"]
    assert sorted({(r["sampling_steps"], r["method"], r["seed"]) for r in rec["runs"]}) == [
        (n, m, s) for n in (3, 5) for m in ("cfg", "dog") for s in (0, 1)]
    model = _judge(out)
    for r in rec["runs"]:
        written = json.loads((Path(r["samples"]).parent / "settings.json").read_text())
        assert written["settings"]["steps"] == str(r["sampling_steps"])
        assert written["settings"]["method"] == r["method"] and written["settings"]["scale"] == 2.0
        images, labels = load_samples(r["samples"])
        assert r["class_match"] == pytest.approx(_class_match(model, images, labels))
    cells = [c for c in rec["comparisons"] if c["metric"] == "fd_classifier"]
    assert [c["sampling_steps"] for c in cells] == [3, 5]
    for c in cells:
        vals = {m: [r["fd_classifier"] for r in rec["runs"] if r["sampling_steps"] == c["sampling_steps"]
                    and r["method"] == m] for m in ("dog", "cfg")}
        assert c["diff"] == pytest.approx(np.mean(vals["dog"]) - np.mean(vals["cfg"]))
        assert c["resolved"] == analysis.resolved(vals["dog"], vals["cfg"])
    # at the map's own step count the ablation's sets are the map cell's
    cell = next(c for c in results["cells"] if c["finetune_steps"] == 10)
    assert {r["samples"] for r in rec["runs"] if r["sampling_steps"] == 5} == {
        r["samples"] for r in cell["runs"] if r["method"] in ("cfg", "dog")}
    # 3 and 5 sampling steps give different images
    a = load_samples(next(r for r in rec["runs"] if r["sampling_steps"] == 3 and r["seed"] == 0)["samples"])[0]
    b = load_samples(next(r for r in rec["runs"] if r["sampling_steps"] == 5 and r["seed"] == 0)["samples"])[0]
    assert not np.array_equal(a, b)
    assert (out / "ablation-steps.png").stat().st_size > 5000


@pytest.mark.slow
def test_uncond_guide_is_a_null_only_finetune_used_as_the_guide(study) -> None:
    cfg, results, out = study
    rec = results["ablations"]["uncond-guide"]
    cell = out / "cells" / "steps10-ipc5"
    train_cfg = json.loads((cell / "finetune-ld1" / "train_config.json").read_text())
    assert train_cfg["label_dropout"] == 1.0 and train_cfg["steps"] == 10
    assert sorted(int(s) for s in rec["guides"]) == [5, 10]
    assert rec["guides"]["5"].endswith("step_0000005") and rec["guides"]["10"].endswith("step_0000010")
    # null label only: the class rows of its label table never get a gradient (Adam, no weight decay), the null
    # row and the rest of the network do
    tables = [load_models(rec["guides"][k], which="model").finetuned.net.y_embedder.embedding_table.weight
              for k in ("5", "10")]  # the raw weights (the EMA's arithmetic rounds at 1e-9)
    assert tables[0].shape == (5, 32)
    torch.testing.assert_close(tables[0][:4], tables[1][:4], rtol=0, atol=0)
    assert (tables[0][4] - tables[1][4]).abs().max() > 1e-5
    r = next(r for r in rec["runs"] if r["method"] == "uncond-guide" and r["guide_steps"] == 5 and r["seed"] == 1)
    assert r["guide"] == rec["guides"]["5"]
    # the saved samples are DoG's rule with the step-5 unconditional checkpoint as guide, drawn again here
    models = load_models(rec["finetune"]["checkpoint"], guide=rec["guides"]["5"])
    images, labels = load_samples(r["samples"])
    s = GenerationSettings(method="dog", scale=2.0, sampler="ddim", steps="5",
                           seeds=[100000 + i for i in range(6)], labels=labels.tolist())
    den = GuidedDenoiser(models.finetuned, models.guide, 2.0)
    again = to_nhwc(to_uint8(sample_images(s, models, denoiser=den)))
    assert np.abs(again.astype(int) - images.astype(int)).max() <= 1
    dog = next(x for x in rec["runs"] if x["method"] == "dog" and x["seed"] == 1)
    assert not np.array_equal(load_samples(dog["samples"])[0], images)  # another guide, other images
    cells = [c for c in rec["comparisons"] if c["metric"] == "class_match"]
    assert sorted((c["guide_steps"], c["b"]) for c in cells) == [(5, "cfg"), (5, "dog"), (10, "cfg"), (10, "dog")]
    assert (out / "ablation-uncond-guide.png").stat().st_size > 5000


@pytest.mark.slow
def test_nine_grid_columns_are_cfg_blend_dog_from_the_same_seeds(study) -> None:
    cfg, results, out = study
    rec = results["ablations"]["nine-grid"]
    with np.load(out / "nine-grid.npz") as z:
        images, ws = z["images"], z["w"].tolist()
    assert images.shape == (2, 3, 4, 16, 16, 1) and ws == [2.0, 3.0]
    models = load_models(rec["finetune"]["checkpoint"], guide=results["source"]["checkpoint"])
    for i, w in enumerate(ws):
        s = GenerationSettings(method="dog", scale=w, sampler="ddim", steps="5", seeds=[0, 1, 2, 3],
                               labels=[0, 1, 2, 3])
        for j, den in enumerate((build_guided_denoiser("cfg", models.finetuned, None, w),
                                 GuidedDenoiser(models.finetuned, BlendedUncond(models.finetuned, models.guide), w),
                                 build_guided_denoiser("dog", models.finetuned, models.guide, w))):
            again = to_nhwc(to_uint8(sample_images(s, models, denoiser=den)))
            assert np.abs(again.astype(int) - images[i, j].astype(int)).max() <= 1
        assert not np.array_equal(images[i, 0], images[i, 2])
    assert (out / "nine-grid.png").stat().st_size > 2000


def test_blended_uncond_averages_the_two_null_predictions(checkpoints) -> None:
    models = load_models(str(checkpoints / "ft"), guide=str(checkpoints / "pre"))
    ft, pre = models.finetuned, models.guide
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 1, 8, 8, generator=g), torch.tensor([10, 500, 900])
    null = torch.full((3,), ft.null_label)
    with torch.no_grad():
        u_ft, u_pre = ft(x, t, null), pre(x, t, torch.full((3,), pre.null_label))
        assert ft.null_label != pre.null_label  # 3 vs 10 classes: each branch at its own null label
        torch.testing.assert_close(BlendedUncond(ft, pre, 0.25)(x, t, null), 0.25 * u_ft + 0.75 * u_pre)
        labels = torch.tensor([0, 1, 2])
        cfg_out = build_guided_denoiser("cfg", ft, None, 3.0)(x, t, labels)
        dog_out = build_guided_denoiser("dog", ft, pre, 3.0)(x, t, labels)
        torch.testing.assert_close(GuidedDenoiser(ft, BlendedUncond(ft, pre, 1.0), 3.0)(x, t, labels), cfg_out)
        torch.testing.assert_close(GuidedDenoiser(ft, BlendedUncond(ft, pre, 0.0), 3.0)(x, t, labels), dog_out)
        half = GuidedDenoiser(ft, BlendedUncond(ft, pre, 0.5), 3.0)(x, t, labels)
        torch.testing.assert_close(half[:, :1], 0.5 * (cfg_out[:, :1] + dog_out[:, :1]))  # linear in the uncond
    with pytest.raises(ValueError, match="expected every label to be the null label 3"):
        BlendedUncond(ft, pre)(x, t, labels)
    with pytest.raises(ValueError, match="blend weight must be in"):
        BlendedUncond(ft, pre, 1.5)


def test_in_regime_names_the_failed_criteria() -> None:
    from domain_guidance.pipelines.demo.study_report import in_regime

    d = {"learned_classes": {"above_chance": True},
         "worse_than_floor": {"fid": {"worse": True}, "class_match": {"worse": True}},
         "cfg_improves": {"fid": {"improves": False}, "in_domain": {"improves": True}}}
    assert in_regime(d) == "no (fails c)"  # CFG helps class fidelity only, not quality
    d["cfg_improves"]["intra_fd_classifier"] = {"improves": True}
    assert in_regime(d) == "yes (per class only)"  # class-conditional quality, not the marginal kind
    d["cfg_improves"]["kid"] = {"improves": True}
    assert in_regime(d) == "yes"
    assert in_regime({"learned_classes": {"above_chance": False}}) == "no (fails a, b, c)"
