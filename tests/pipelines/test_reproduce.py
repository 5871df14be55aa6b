"""dog reproduce: the published protocol presets field by field, and prepare -> tiny fine-tune -> samples ->
scores -> table end to end on a fake ArtBench-10 download, resumed without redoing anything."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from domain_guidance.io.data import center_crop_arr
from domain_guidance.pipelines.reproduce import BENCHMARKS, reproduce, resolve, train_config
from domain_guidance.pipelines.reproduce.protocols import clean_resize
from domain_guidance.pipelines.training import resolve_config, train
from tests.io.prepare import fakes


def test_published_preset_field_by_field(tmp_path):
    cfg = resolve("food101", overrides={"base": "DiT-XL-2-256x256.pt"})
    t = train_config(cfg, tmp_path)
    # the published recipe (docs/protocols.md): DiT-XL/2-256 from ImageNet, full fine-tune
    assert (t.init, t.mode, t.base, t.base_which) == ("base", "full", "DiT-XL-2-256x256.pt", "ema")
    assert (t.steps, t.batch_size, t.lr, t.weight_decay, t.adam_betas) == (24_000, 32, 1e-4, 0.0, [0.9, 0.999])
    assert (t.ema.decay, t.ema.warmup, t.label_dropout, t.grad_clip) == (0.9999, "none", 0.1, None)
    assert (t.precision, t.tf32, t.vae) == ("fp32", True, "stabilityai/sd-vae-ft-ema")
    assert (t.data.resolution, t.data.channels, t.data.random_flip) == (256, 3, True)
    assert t.data.dataset == str(tmp_path / "data" / "train") and t.out == str(tmp_path / "finetune")
    # sampling and evaluation: the follow-up's re-run
    assert (cfg.methods, cfg.scale, cfg.sampler, cfg.steps) == (["unguided", "cfg", "dog"], 1.5, "ddpm", "50")
    assert (cfg.num_samples, cfg.seed, cfg.metrics) == (10_000, 0, ["fid", "fd_dinov2"])
    assert cfg.eval_protocols == ["dgm-eval-clean", "pytorch-fid"] and cfg.train_split == "train"
    assert resolve("food101", "published-50k").num_samples == 50_000
    assert resolve("food101", "published-250").steps == "250"
    assert resolve("cub200", overrides={"train": {"steps": 7}}).train == {"steps": 7}


def test_published_numbers_and_rows():
    assert sorted(BENCHMARKS) == ["artbench10", "caltech101", "cub200", "df20-mini", "food101", "stanford-cars",
                                  "sun397"]
    pub = {n: {m: v["fid"] for m, v in b.published.items()} for n, b in BENCHMARKS.items()}
    assert pub["caltech101"] == {"unguided": 30.02, "dog": 23.76} and pub["food101"] == {"unguided": 16.75, "dog": 10.85}
    assert pub["stanford-cars"] == {"unguided": 16.24} and pub["cub200"] == {"unguided": 9.35}
    assert pub["artbench10"] == {"unguided": 23.36, "dog": 17.30} and pub["sun397"] == pub["df20-mini"] == {}


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="eval_protocols"):
        resolve("food101", overrides={"eval_protocols": ["clean"]})
    with pytest.raises(ValueError, match="benchmark"):
        resolve("food-101")
    with pytest.raises(KeyError, match="protocol preset"):
        resolve("food101", "fast")
    with pytest.raises(ValueError, match="num_samples"):
        resolve("food101", overrides={"num_samples": 1})


def test_clean_resize_keeps_fractions_and_matches_pil_rounded():
    yy, xx = np.mgrid[0:13, 0:21]
    img = np.stack([xx * 12, yy * 19, (xx + yy) * 7], axis=2).astype(np.uint8)  # smooth: no overshoot to clip
    clean = clean_resize(img, 29)  # (29, 29, 3) float32 in [0, 255]
    rounded = np.asarray(Image.fromarray(img).resize((29, 29), Image.Resampling.BICUBIC)).astype(np.float32)
    assert clean.shape == (29, 29, 3) and clean.dtype == np.float32 and 0 <= clean.min() and clean.max() <= 255
    assert np.abs(clean - rounded).max() <= 1.0 + 1e-3  # PIL's uint8 path rounds the same filter (twice)
    assert np.mean(clean != np.round(clean)) > 0.9  # the clean path keeps the fractions


@pytest.fixture
def tiny_dinov2(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    net = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                   image_size=224, patch_size=14))
    net.save_pretrained(tmp_path / "dinov2")
    return tmp_path / "dinov2"


def _fd_by_hand(samples: np.ndarray, reals: list[np.ndarray], dinov2_dir: Path, clean: bool) -> float:
    """FD_DINOv2 computed outside the pipeline: resize, normalise, CLS features, Frechet distance."""
    from transformers import Dinov2Model

    from domain_guidance.pipelines.metrics import frechet_distance_from_features

    net = Dinov2Model.from_pretrained(str(dinov2_dir)).eval()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def feats(images: list[np.ndarray]) -> np.ndarray:
        if clean:
            x = [clean_resize(a, 224) / 255.0 for a in images]
        else:
            x = [np.asarray(Image.fromarray(a).resize((224, 224), Image.Resampling.BICUBIC)) / 255.0 for a in images]
        t = torch.from_numpy(((np.stack(x) - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
        with torch.no_grad():
            return net(pixel_values=t).pooler_output.numpy()

    return frechet_distance_from_features(feats(list(samples)), feats(reals), method="eigh")


@pytest.mark.slow
def test_reproduce_end_to_end_and_resume(tmp_path, tiny_dinov2, one_thread):
    archive = fakes.artbench10(tmp_path)
    cfg = resolve("artbench10", "cpu-tiny", {"source": [str(archive)], "dinov2_model": str(tiny_dinov2),
                                              "metrics": ["fd_dinov2"], "num_samples": 8})
    out = tmp_path / "run"
    first = reproduce(cfg, out, stop_after="prepare", progress=False)
    assert list(first["stages"]) == ["prepare"] and (out / "data" / "train" / "baroque").is_dir()
    # the pre-trained model of this tiny world: a few steps of the cpu-tiny recipe on the same folder
    train(resolve_config("cpu-tiny", overrides={
        "data": {"dataset": str(out / "data" / "train"), "resolution": 8, "channels": 3}, "steps": 4,
        "batch_size": 8, "out": str(tmp_path / "base"), "sample_every": 0, "tensorboard": False, "ckpt_every": 4,
        "progress": False}))
    cfg = cfg.replace(base=str(tmp_path / "base"))
    report = reproduce(cfg, out, progress=False)
    st = report["stages"]
    assert st["prepare"]["reused"] is True and st["finetune"]["step"] == 10 and not st["finetune"]["skipped"]
    assert {m: v["generated_now"] for m, v in st["sample"]["methods"].items()} == {"unguided": 8, "cfg": 8, "dog": 8}
    assert st["evaluate"]["computed"] == 6
    rows = report["rows"]
    assert [(r["protocol"], r["method"], r["w"]) for r in rows] == [
        ("dgm-eval-clean", "unguided", 1.0), ("dgm-eval-clean", "cfg", 1.5), ("dgm-eval-clean", "dog", 1.5),
        ("pytorch-fid", "unguided", 1.0), ("pytorch-fid", "cfg", 1.5), ("pytorch-fid", "dog", 1.5)]
    assert [r["published_fid"] for r in rows[:3]] == [23.36, None, 17.30]
    assert not any(r["comparable_to_published"] for r in rows)  # a tiny CPU run is not the published protocol
    # every number checked against an independent computation from the files
    samples = np.load(out / "samples" / "dog-w1.5" / "samples.npz")["arr_0"]  # (8, 8, 8, 3) uint8
    assert samples.shape == (8, 8, 8, 3)
    files = sorted((out / "data" / "train").rglob("*.jpg"))
    reals = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    crops = [np.asarray(center_crop_arr(Image.open(p).convert("RGB"), 8)) for p in files]
    dog = {r["protocol"]: r["fd_dinov2"] for r in rows if r["method"] == "dog"}
    assert dog["dgm-eval-clean"] == pytest.approx(_fd_by_hand(samples, reals, tiny_dinov2, clean=True), rel=1e-4)
    assert dog["pytorch-fid"] == pytest.approx(_fd_by_hand(samples, crops, tiny_dinov2, clean=False), rel=1e-4)
    assert abs(dog["dgm-eval-clean"] - dog["pytorch-fid"]) > 1e-3  # the protocols differ, so do the numbers
    table = (out / "table.md").read_text()
    assert "| unguided | 1 | - | dgm-eval-clean | 8 |" in table and "| 23.36 | 19.14 | no: num_samples |" in table
    assert "| dog | 1.5 | 3 | dgm-eval-clean |" in table and "reference: 6 of 6 real images (official split" in table
    # the row's guided channels reach the sampler (DiT's forward_with_cfg: 3 of the latent channels)
    assert json.loads((out / "samples" / "dog-w1.5" / "settings.json").read_text())["settings"]["channels"] == 3
    saved = json.loads((out / "metrics" / "dog-w1.5.dgm-eval-clean.json").read_text())
    assert saved["protocol"] == "dgm-eval-clean" and "clean" in saved["extractors"]["dinov2"]["resize"]
    # a rerun redoes nothing and gives the same row
    again = reproduce(cfg, out, progress=False)
    st = again["stages"]
    assert st["finetune"]["skipped"] and st["evaluate"]["computed"] == 0
    assert {m: v["generated_now"] for m, v in st["sample"]["methods"].items()} == {"unguided": 0, "cfg": 0, "dog": 0}
    assert again["rows"] == rows
    # dgm-eval's --nsample: a seeded subset of the reference folder; only the scores are redone
    sub = reproduce(cfg.replace(reference_max_images=4), out, progress=False)
    assert sub["stages"]["evaluate"]["computed"] == 6 and sub["stages"]["finetune"]["skipped"]
    saved = json.loads((out / "metrics" / "dog-w1.5.pytorch-fid.json").read_text())
    assert (saved["num_reference"], saved["reference_folder_images"]) == (4, 6)
    np.random.seed(13579)  # dgm-eval's rule, with the global RNG as it uses it
    kept = [crops[i] for i in sorted(np.random.choice(6, 4, replace=False))]
    assert sub["rows"][5]["fd_dinov2"] == pytest.approx(_fd_by_hand(samples, kept, tiny_dinov2, clean=False), rel=1e-4)
    # a rerun with settings that change results is refused, naming them
    with pytest.raises(ValueError, match="scale"):
        reproduce(cfg.replace(scale=2.0), out, progress=False)
    # the same row through the command line, from the prepared folder into a new --out: the same numbers
    from domain_guidance.cli import main

    assert main(["reproduce", "artbench10", "--protocol", "cpu-tiny", "--data", str(out / "data"), "--base",
                 str(tmp_path / "base"), "--dinov2", str(tiny_dinov2), "--out", str(tmp_path / "cli"),
                 "--num-samples", "8", "--set", "metrics=[fd_dinov2]", "--no-progress"]) == 0
    cli_rows = json.loads((tmp_path / "cli" / "results.json").read_text())["rows"]
    assert [(r["method"], r["protocol"], r["fd_dinov2"]) for r in cli_rows] == \
        [(r["method"], r["protocol"], r["fd_dinov2"]) for r in rows]


def test_cli_reproduce_errors_and_list(tmp_path, capsys):
    from domain_guidance.cli import main

    assert main(["reproduce", "--list"]) == 0
    assert "caltech101" in capsys.readouterr().out
    assert main(["reproduce", "cub200", "--out", str(tmp_path / "r"), "--protocol", "cpu-tiny", "--base", "b.pt"]) == 2
    err = capsys.readouterr().err
    assert "no prepared data" in err and "--from" in err
    assert main(["reproduce", "cub200", "--out", str(tmp_path / "r2"), "--print-config", "--base", "b.pt", "--set", "train.steps=5",
                 "scale=2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["finetune"]["steps"] == 5 and printed["reproduce"]["scale"] == 2.0


@pytest.mark.slow
def test_clean_protocol_inception_features(tmp_path, one_thread):
    """dgm-eval-clean on the real FID Inception: real images of other sizes, resized straight to 299 (no crop)."""
    from domain_guidance.pipelines.metrics import InceptionExtractor, compute_stats
    from domain_guidance.pipelines.reproduce.protocols import CleanResized, real_images

    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    for i, size in enumerate([(20, 12), (9, 15)]):
        (folder / f"{i}.png").write_bytes(fakes.image_bytes(i, size, fmt="PNG"))
    ext = InceptionExtractor()
    stats = compute_stats(real_images(tmp_path / "train", "dgm-eval-clean", 8, "inception"),
                          CleanResized(ext, "inception"), batch_size=2, keep_features=True)
    assert stats.protocol["image_shape"] == [3, 299, 299] and "clean" in stats.protocol["resize"]
    by_hand = []
    for p in sorted(folder.iterdir()):
        x = clean_resize(np.asarray(Image.open(p).convert("RGB")), 299) / 255.0  # (299, 299, 3)
        t = torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1  # (1, 3, 299, 299) in [-1, 1]
        with torch.no_grad():
            by_hand.append(ext.model(t).numpy()[0])  # the network as loaded (not the folded fast copy)
    np.testing.assert_allclose(stats.features, np.stack(by_hand), atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="expected float images"):
        CleanResized(ext, "inception")(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
