"""Bad files, outputs, devices and Ctrl-C give one line `dog <cmd>: error: ...` (exit 2) or exit 130, no traceback."""
from __future__ import annotations

import ast
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import domain_guidance
from domain_guidance.cli import main
from domain_guidance.cli.evaluate import _samples_path

REPO = Path(__file__).resolve().parents[2]
TINY = ['model_overrides={"hidden_size": 32, "depth": 1, "num_heads": 2}', "batch_size=8", "tensorboard=false",
        "sample_every=0", "progress=false", "device=cpu"]


def one_line(capsys, *expected: str) -> str:
    """stderr is exactly one line, without a traceback, containing every ``expected`` text."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, (text, err)
    return err


# ----- corrupt checkpoints and sample files -----

def test_unreadable_checkpoints_name_the_file(checkpoints, tmp_path, capsys):
    text_pt = tmp_path / "model.pt"
    text_pt.write_text("hello, this is not a checkpoint\n")
    assert main(["sample", "--model", str(text_pt), "--method", "unguided", "--seeds", "0-1",
                 "--out", str(tmp_path / "s1"), "--device", "cpu"]) == 2
    err = one_line(capsys, str(text_pt), "cannot read as a torch checkpoint", "text file", "'hello, this is not")
    assert not err.endswith("error: 101")

    good = (checkpoints / "pre" / "model.safetensors").read_bytes()
    cut_dir = tmp_path / "cut"
    cut_dir.mkdir()
    for f in (checkpoints / "pre").iterdir():
        (cut_dir / f.name).write_bytes(f.read_bytes())
    (cut_dir / "model.safetensors").write_bytes(good[: len(good) // 2])  # a truncated copy of a checkpoint dir
    assert main(["sample", "--model", str(cut_dir), "--method", "unguided", "--seeds", "0-1",
                 "--out", str(tmp_path / "s2"), "--device", "cpu"]) == 2
    one_line(capsys, str(cut_dir / "model.safetensors"), "cannot read as safetensors", f"{len(good) // 2} bytes")
    single = tmp_path / "cut.safetensors"
    single.write_bytes(good[:100])
    assert main(["sample", "--model", str(single), "--method", "unguided", "--seeds", "0-1",
                 "--out", str(tmp_path / "s3"), "--device", "cpu"]) == 2
    one_line(capsys, str(single), "cannot read as safetensors")

    pt = tmp_path / "full.pt"
    torch.save({"w": torch.zeros(1000)}, pt)
    data = pt.read_bytes()
    pt.write_bytes(data[: len(data) // 2])
    assert main(["sample", "--model", str(pt), "--method", "unguided", "--seeds", "0-1",
                 "--out", str(tmp_path / "s4"), "--device", "cpu"]) == 2
    one_line(capsys, str(pt), "cannot read as a torch checkpoint", "zip archive")


def test_truncated_npz_names_the_file(tmp_path, capsys):
    good = tmp_path / "good.npz"
    np.savez(good, arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:150])
    for samples, reference in ((cut, good), (good, cut)):
        assert main(["evaluate", str(samples), str(reference), "--device", "cpu"]) == 2
        one_line(capsys, str(cut), "cannot read as an .npz of images")


# ----- outputs, devices -----

def test_bad_out_and_device_are_named(tmp_path, capsys):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    head, tail = ["pretrain", "--preset", "cpu-tiny", "--steps", "1"], ["--set", *TINY]
    assert main([*head, "--out", str(a_file), *tail]) == 2
    one_line(capsys, f"--out {a_file}: exists and is not a directory")
    assert main([*head, "--out", str(a_file / "run"), *tail]) == 2
    one_line(capsys, f"--out {a_file / 'run'}", "is a file, so nothing can be created under it")
    assert main(["toy", "--out", str(a_file), "--track", "exact"]) == 2
    one_line(capsys, "dog toy: error: --out", "not a directory")
    assert main(["evaluate", str(ref), str(ref), "--out", str(tmp_path), "--device", "cpu"]) == 2
    one_line(capsys, f"--out {tmp_path}: is a directory")
    assert main(["evaluate", str(ref), str(ref), "--out", str(a_file / "m.json"), "--device", "cpu"]) == 2
    one_line(capsys, "--out", "is a file, so nothing can be created under it")
    assert main(["demo", "--out", str(a_file), "--no-fid"]) == 2
    one_line(capsys, "dog demo: error: --out")

    out = tmp_path / "run"
    assert main([*head, "--out", str(out), *tail, "device=gpu"]) == 2
    one_line(capsys, "device 'gpu' is not a device name", "expected auto, cpu, cuda")
    assert main(["evaluate", str(ref), str(ref), "--device", "tpu:0"]) == 2
    one_line(capsys, "dog evaluate: error: device 'tpu:0'")
    if not torch.cuda.is_available():
        assert main([*head, "--out", str(out), "--device", "cuda", *tail[:-1]]) == 2  # TINY ends with device=cpu
        one_line(capsys, "device 'cuda' requested but CUDA is not available", "--device cpu")
    assert not out.exists()  # nothing was started


# ----- Ctrl-C -----

def test_ctrl_c_exits_130_and_says_what_is_kept(checkpoints, tmp_path, capsys, monkeypatch):
    import domain_guidance.pipelines.generate as generate
    import domain_guidance.pipelines.training.loop as loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    assert main(["pretrain", "--preset", "cpu-tiny", "--out", str(tmp_path / "run"), "--set", *TINY]) == 130
    one_line(capsys, "dog pretrain: interrupted; checkpoint kept")
    monkeypatch.setattr(generate, "generate", interrupted)
    assert main(["sample", "--model", str(checkpoints / "ft"), "--method", "unguided", "--seeds", "0-1",
                 "--out", str(tmp_path / "s"), "--device", "cpu"]) == 130
    one_line(capsys, "dog sample: interrupted; finished shards kept")
    monkeypatch.setenv("DOG_DEBUG", "1")  # developers get the real exception
    with pytest.raises(KeyboardInterrupt):
        main(["pretrain", "--preset", "cpu-tiny", "--out", str(tmp_path / "run"), "--set", *TINY])


def test_dog_debug_reraises(tmp_path, monkeypatch):
    monkeypatch.setenv("DOG_DEBUG", "1")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        main(["toy", "--out", __file__, "--track", "exact"])


# ----- entry points, version, Python 3.10 -----

def test_version_and_python_m(capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"dog {domain_guidance.__version__}"
    monkeypatch.setattr(sys, "argv", ["domain_guidance", "--version"])
    with pytest.raises(SystemExit) as e:  # python -m domain_guidance --version
        runpy.run_module("domain_guidance", run_name="__main__")
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"dog {domain_guidance.__version__}"


def test_toml_is_optional_without_tomllib(tmp_path, capsys, monkeypatch):
    """Python 3.10 has no tomllib: no module imports it at load time; only reading a .toml needs tomli, and says so."""
    for module in ("pipelines/toy/config.py", "pipelines/training/config.py"):
        tree = ast.parse((REPO / "src" / "domain_guidance" / module).read_text())
        top = [a.name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for a in node.names] + [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
        assert not {"tomllib", "tomli"} & set(top), module
    toml = tmp_path / "run.toml"
    toml.write_text("steps = 3\n")
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"steps": 3}))
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10 without tomli
    monkeypatch.setitem(sys.modules, "tomli", None)
    assert main(["pretrain", "--preset", "cpu-tiny", "--config", str(as_json), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    assert main(["pretrain", "--preset", "cpu-tiny", "--config", str(toml), "--print-config"]) == 2
    one_line(capsys, str(toml), "needs Python 3.11+ or the 'tomli' package")
    assert main(["toy", "--config", str(toml), "--out", str(tmp_path / "toy")]) == 2
    one_line(capsys, str(toml), "needs Python 3.11+ or the 'tomli' package")


# ----- dog evaluate: where the result goes by default -----

def test_default_result_file_never_collides(tmp_path):
    run = tmp_path / "dog-w2"  # a `dog sample` output directory
    run.mkdir()
    np.savez(run / "samples.npz", arr_0=np.zeros((2, 8, 8, 1), np.uint8))
    (run / "settings.json").write_text(json.dumps({"settings": {"method": "dog"}}))
    for given in (run, run / "samples.npz"):
        path, generation, out = _samples_path(str(given))
        assert (path, out) == (run / "samples.npz", run / "metrics.json")
        assert generation == {"settings": {"method": "dog"}}
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"  # bare files side by side
    assert _samples_path(str(a))[2] == tmp_path / "a.metrics.json"
    assert _samples_path(str(b))[2] == tmp_path / "b.metrics.json"
    for name in ("cats", "dogs"):  # image folders side by side: the result goes next to each, not inside
        (tmp_path / name).mkdir()
        path, generation, out = _samples_path(str(tmp_path / name) + "/")
        assert (path, generation, out) == (tmp_path / name, None, tmp_path / f"{name}.metrics.json")


@pytest.mark.slow
def test_evaluate_writes_one_result_per_sample_set(tmp_path, capsys):
    """The real evaluator on two .npz files and two image folders in one parent folder: four results."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8))
    sets = []
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", arr_0=rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8))
        folder = tmp_path / f"{name}_png"
        folder.mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
        sets += [(tmp_path / f"{name}.npz", tmp_path / f"{name}.metrics.json"),
                 (folder, tmp_path / f"{name}_png.metrics.json")]
    for samples, _ in sets:
        assert main(["evaluate", str(samples), str(ref), "--fd-method", "eigh", "--device", "cpu",
                     "--reference-cache", str(tmp_path / "cache")]) == 0
    fids = []
    for samples, result in sets:
        saved = json.loads(result.read_text())
        assert saved["samples"]["source"] == str(samples)
        fids.append(saved["metrics"]["fid"])
    assert len(set(fids)) == 4  # four different sample sets, four different numbers, none overwritten
    assert not (tmp_path / "metrics.json").exists() and not list((tmp_path / "a_png").glob("*.json"))
    capsys.readouterr()


# ----- dog demo: a missing --source is an error, pre-training happens only with --pretrain -----

def test_demo_missing_source_is_an_error_not_a_pretraining(tmp_path, capsys):
    from domain_guidance.cli import build_parser
    from domain_guidance.cli.demo import config_from_args
    from domain_guidance.pipelines.demo.config import DemoConfig
    from domain_guidance.pipelines.demo.run import ensure_source

    out, typo = tmp_path / "demo", tmp_path / "runs" / "animal-sourse"
    assert main(["demo", "--source", str(typo), "--out", str(out), "--no-fid"]) == 2
    one_line(capsys, f"source model {typo} (--source) does not exist", "pass --pretrain to pre-train",
             str(out / "source"))
    assert not out.exists()  # nothing written, nothing trained
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"source model {empty} .* holds no checkpoint"):
        ensure_source(DemoConfig(out=str(out), source=str(empty)), out)
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["demo", "--pretrain", "--pretrain-steps", "7"]))
    assert cfg.pretrain and cfg.pretrain_steps == 7
    assert not config_from_args(parser.parse_args(["demo", "--source", str(empty)])).pretrain
    with pytest.raises(SystemExit):  # --source and --pretrain exclude each other
        parser.parse_args(["demo", "--pretrain", "--source", str(empty)])
    assert "not allowed with argument" in capsys.readouterr().err
