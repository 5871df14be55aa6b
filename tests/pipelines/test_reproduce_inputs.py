"""dog reproduce checks its inputs before it reuses a stage or starts one: the data must be the benchmark's, DoG
needs --base, and a fine-tune in a used --out is reused only for the same data bytes and base weights."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from domain_guidance.io.data.prepare import prepare_dataset
from domain_guidance.io.fingerprints import StageInputsChanged
from domain_guidance.pipelines.reproduce import reproduce, resolve
from domain_guidance.pipelines.training import resolve_config, train
from tests.io.prepare import fakes


def _cli(*args: str) -> int:
    from domain_guidance.cli import main

    return main(["reproduce", *args, "--no-progress"])


def test_cpu_tiny_without_base_is_refused_before_any_work(tmp_path, capsys):
    data = tmp_path / "art"
    prepare_dataset("artbench10", fakes.artbench10(tmp_path), data)
    out = tmp_path / "run"
    assert _cli("artbench10", "--protocol", "cpu-tiny", "--data", str(data), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "DoG needs the pre-trained model as its guide" in err and "pass --base CHECKPOINT" in err
    assert "--guide" not in err  # an option dog reproduce does not have
    assert not (out / "reproduce_config.json").exists() and not (out / "finetune").exists()
    assert reproduce(resolve("artbench10", "cpu-tiny", {"data": str(data)}), out, stop_after="prepare",
                     progress=False)["stages"]["prepare"]["reused"]  # preparing alone needs no base


def test_data_of_another_benchmark_is_refused_naming_both(tmp_path, capsys):
    food = tmp_path / "food"
    prepare_dataset("food101", fakes.food101(tmp_path), food)
    out = tmp_path / "run"
    assert _cli("artbench10", "--protocol", "cpu-tiny", "--data", str(food), "--base", str(tmp_path / "b"),
                "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{food} holds a prepared 'food101' (2 classes: apple_pie, baby_back_ribs)" in err
    assert "this row is artbench10 (ArtBench-10, 10 classes)" in err and "dog data prepare artbench10" in err
    assert not (out / "reproduce_config.json").exists()  # nothing written: the corrected rerun is not blocked
    bare = tmp_path / "bare"  # a folder not made by `dog data prepare`: its class folders are counted
    shutil.copytree(food / "train", bare / "train")
    with pytest.raises(ValueError, match=r"holds 2 class folders \(apple_pie, baby_back_ribs\) and no manifest.json, "
                                         r"but this row is artbench10 \(ArtBench-10, 10 classes\)"):
        reproduce(resolve("artbench10", "cpu-tiny", {"data": str(bare), "base": "b"}), out, progress=False)


def test_missing_data_folder_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match=rf"--data {tmp_path / 'nope'}: no train/ folder inside"):
        reproduce(resolve("artbench10", "cpu-tiny", {"data": str(tmp_path / "nope"), "base": "b"}), out,
                  progress=False)
    assert not (out / "reproduce_config.json").exists()  # a corrected --data into the same --out is not blocked


def test_used_out_with_another_download_is_refused_naming_what_reproduce_accepts(tmp_path):
    from tests.io.prepare.test_prepare_inputs import _renamed_class

    archive, out = fakes.food101(tmp_path), tmp_path / "run"
    cfg = resolve("food101", "cpu-tiny", {"source": [str(archive)]})
    assert not reproduce(cfg, out, stop_after="prepare", progress=False)["stages"]["prepare"]["reused"]
    _renamed_class(archive, "baby_back_ribs", "churros")  # the same path, another download
    with pytest.raises(StageInputsChanged, match=r"\(source: recorded [0-9a-f]{16}\.\.\., now [0-9a-f]{16}\.\.\.\); .*; "
                                                 r"dog reproduce does not replace .*choose a new --out") as e:
        reproduce(cfg, out, stop_after="prepare", progress=False)
    assert "--overwrite" not in str(e.value)  # an option dog reproduce does not have


@pytest.mark.slow
def test_used_out_with_other_data_or_base_is_refused(tmp_path, one_thread):
    data = tmp_path / "art"
    prepare_dataset("artbench10", fakes.artbench10(tmp_path), data)
    base = tmp_path / "base"
    train(resolve_config("cpu-tiny", overrides={
        "data": {"dataset": str(data / "train"), "resolution": 8, "channels": 3}, "steps": 1, "batch_size": 8,
        "out": str(base), "sample_every": 0, "tensorboard": False, "ckpt_every": 1, "progress": False}))
    cfg = resolve("artbench10", "cpu-tiny", {"data": str(data), "base": str(base),
                                             "train": {"steps": 2, "ckpt_every": 2}})
    out = tmp_path / "run"
    assert not reproduce(cfg, out, stop_after="finetune", progress=False)["stages"]["finetune"]["skipped"]
    recorded = __import__("json").loads((out / "inputs.json").read_text())["finetune"]
    # other data, the same file names: one pixel of one image differs
    other = tmp_path / "art-edited"
    shutil.copytree(data, other)
    img = next((other / "train" / "baroque").iterdir())
    arr = np.asarray(Image.open(img).convert("RGB")).copy()
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(img, format="PNG")
    with pytest.raises(StageInputsChanged, match=rf"the fine-tune in {out / 'finetune'} was made from other inputs "
                                                 rf"than the current ones \(data: recorded {recorded['data'][:16]}\.\.\., "
                                                 rf"now [0-9a-f]{{16}}\.\.\.\); .*choose another --out"):
        reproduce(cfg.replace(data=str(other)), out, stop_after="finetune", progress=False)
    assert not (out / "reproduce_config.json").read_text().count(str(other))  # refused before anything was written
    # the same data folder, base weights replaced at the same path
    shutil.copytree(base, tmp_path / "base-kept")
    train(resolve_config("cpu-tiny", overrides={
        "data": {"dataset": str(data / "train"), "resolution": 8, "channels": 3}, "steps": 2, "batch_size": 8,
        "out": str(base), "sample_every": 0, "tensorboard": False, "ckpt_every": 1, "progress": False}), resume=True)
    with pytest.raises(StageInputsChanged, match=r"\(base: recorded [0-9a-f]{16}\.\.\., now [0-9a-f]{16}\.\.\.\)"):
        reproduce(cfg, out, stop_after="finetune", progress=False)
    shutil.rmtree(base)
    shutil.copytree(tmp_path / "base-kept", base)
    assert reproduce(cfg, out, stop_after="finetune", progress=False)["stages"]["finetune"]["skipped"]
