"""Config resolution: presets, TOML/YAML files, --set overrides, validation, the CLI's help."""
from __future__ import annotations

import json

import pytest

from domain_guidance.cli import build_parser, main
from domain_guidance.pipelines.training import PRESETS, TrainConfig, resolve_config
from domain_guidance.pipelines.training.config import parse_value


def test_every_preset_resolves_and_the_published_recipe_is_exact():
    for name in PRESETS:
        sets = [] if PRESETS[name].get("init") == "scratch" or PRESETS[name].get("base") else ["base=x.pt"]
        sets += [] if PRESETS[name].get("data", {}).get("dataset") else ["data.dataset=/data/target"]
        cfg = resolve_config(name, sets=sets)
        assert cfg.preset == name
    pub = resolve_config("dit-xl2-imagenet-published", sets=["base=DiT-XL-2-256x256.pt", "data.dataset=/d"])
    assert (pub.mode, pub.lr, pub.weight_decay, pub.batch_size, pub.steps) == ("full", 1e-4, 0.0, 32, 24000)
    assert (pub.ema.decay, pub.ema.warmup, pub.label_dropout, pub.data.resolution) == (0.9999, "none", 0.1, 256)
    assert pub.vae == "stabilityai/sd-vae-ft-ema" and pub.precision == "fp32"


def test_file_then_set_precedence_toml_and_yaml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "cpu-tiny"\nlr = 5e-4\nsteps = 7\n[data]\nclasses = [1, 2]\n[lora]\nrank = 4\n')
    cfg = resolve_config(config_file=toml, sets=["steps=9", "ema.warmup=power", "grid.methods=[unguided]"])
    assert (cfg.preset, cfg.lr, cfg.steps, cfg.data.classes, cfg.lora.rank) == ("cpu-tiny", 5e-4, 9, [1, 2], 4)
    assert cfg.ema.warmup == "power" and cfg.grid.methods == ["unguided"] and cfg.data.dataset == "digits"
    yml = tmp_path / "run.yaml"
    yml.write_text("init: scratch\ndata: {dataset: digits, resolution: 8}\nmodel_overrides: {depth: 1}\n")
    cfg = resolve_config(config_file=yml, sets=["model_overrides.hidden_size=32", "init=base", "base=0123"])
    assert cfg.model_overrides == {"depth": 1, "hidden_size": 32} and cfg.base == "0123" and cfg.init == "base"
    with pytest.raises(ValueError, match=r"init='scratch' \(config file .*run.yaml\).*base='0123' \(--set base=0123\)"):
        resolve_config(config_file=yml, sets=["base=0123"])  # the file's explicit init=scratch contradicts a base
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg  # the saved JSON round-trips


def test_bad_keys_and_values_are_named():
    with pytest.raises(ValueError, match="unknown config key 'data.datset'"):
        resolve_config("cpu-tiny", sets=["data.datset=x"])
    with pytest.raises(ValueError, match="mode must be 'full', 'lora' or 'difffit'"):
        resolve_config("cpu-tiny", sets=["mode=half"])
    with pytest.raises(ValueError, match="needs a pre-trained checkpoint"):
        resolve_config(None, sets=["data.dataset=digits"])
    with pytest.raises(ValueError, match="without a space"):
        resolve_config("cpu-tiny", sets=["model_overrides={depth:1}"])
    with pytest.raises(KeyError, match="unknown preset"):
        resolve_config("nope")
    assert parse_value("1e-4") == 1e-4 and parse_value("[0, 1]") == [0, 1] and parse_value("null") is None


def test_cli_help_and_print_config(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["finetune", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--resume" in text and "dit-xl2-imagenet-published" in text and "torchrun" in text
    assert main(["pretrain", "--preset", "cpu-tiny", "--set", "steps=3", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 3 and printed["init"] == "scratch"
    assert main(["pretrain", "--preset", "animal-target", "--print-config"]) == 2  # a fine-tune preset


def test_resume_accepts_a_field_added_after_the_checkpoint_at_its_default():
    from domain_guidance.pipelines.training.config import TrainConfig, resolve_config
    from domain_guidance.pipelines.training.state import resume_differences

    current = resolve_config("cpu-tiny").to_dict()
    saved = {k: v for k, v in current.items() if k != "base_prediction"}  # written before the field existed
    assert resume_differences(saved, current, TrainConfig().to_dict()) == []
    changed = {**current, "base_prediction": "velocity"}
    assert resume_differences(saved, changed, TrainConfig().to_dict()) == [
        "base_prediction: checkpoint 'auto', now 'velocity'"]
    assert resume_differences(saved, current) == ["base_prediction: checkpoint None, now 'auto'"]  # no defaults given
