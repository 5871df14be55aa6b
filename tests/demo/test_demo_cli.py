"""``dog demo``'s options: the variants (quick, full, flow), the targets and what each decides."""
from __future__ import annotations

import pytest

from domain_guidance.cli import build_parser
from domain_guidance.cli.demo import config_from_args
from domain_guidance.pipelines.demo.config import DemoConfig


def test_cli_options_and_variants() -> None:
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["demo", "--w", "1.5,2", "--seeds", "0 1", "--samples", "64"]))
    assert cfg.w == [1.5, 2.0] and cfg.seeds == [0, 1] and cfg.samples == 64 and cfg.out == "runs/demo"
    full = config_from_args(parser.parse_args(["demo", "--full", "--finetune-steps", "5"]))
    assert full.out == "runs/demo-full" and len(full.seeds) == 3 and len(full.w) > 2 and full.finetune_steps == 5
    assert full.also_without_dropout
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--full", "--quick"])
    with pytest.raises(ValueError, match="w must be"):
        DemoConfig(w=[0.5]).validate()
    quick = config_from_args(parser.parse_args(["demo"]))
    # the guidance interval: EDM2's recommended sigma (0.28, 5.42] on the DiT schedule, not the high-noise range
    assert len(quick.seeds) >= 3 and quick.dog_interval == [82.0, 578.0]
    assert {1.25, 1.5, 2.0, 3.0} <= set(full.w) and full.dog_interval == [82.0, 578.0]
    assert config_from_args(parser.parse_args(["demo", "--flow"])).dog_interval == [0.16, 0.78]
    with pytest.raises(ValueError, match="dog_interval must be"):
        DemoConfig(dog_interval=[900, 100]).validate()
    assert config_from_args(parser.parse_args(["demo", "--dog-interval", "none"])).dog_interval is None
    assert config_from_args(parser.parse_args(["demo", "--dog-interval", "0,400"])).dog_interval == [0.0, 400.0]
    with pytest.raises(ValueError, match="dog_interval must be"):
        config_from_args(parser.parse_args(["demo", "--dog-interval", "400"]))
    with pytest.raises(ValueError, match="without repeats"):
        DemoConfig(seeds=[0, 0]).validate()


def test_targets_set_the_defaults_and_an_explicit_value_wins() -> None:
    parser = build_parser()
    covered = config_from_args(parser.parse_args(["demo"]))
    assert (covered.target, covered.target_classes, covered.finetune_steps, covered.target_preset) == (
        "covered", [0, 1, 2, 3], 2000, "glyph-target-covered")
    assert covered.source.endswith("glyph-source.safetensors") and covered.spec.channels == 3
    outside = config_from_args(parser.parse_args(["demo", "--target", "outside"]))
    assert (outside.out, outside.target_classes, outside.finetune_steps) == ("runs/demo-outside", [8, 9, 10, 11], 2000)
    animal = config_from_args(parser.parse_args(["demo", "--target", "animal", "--finetune-steps", "7"]))
    assert (animal.out, animal.target_classes, animal.finetune_steps, animal.spec.channels) == (
        "runs/demo-animal", [6, 7, 8, 9], 7, 1)
    assert animal.source.endswith("animal-source.safetensors") and animal.pretrain_steps == 9000
    flow = config_from_args(parser.parse_args(["demo", "--flow"]))  # the flow variant is the animal one
    assert (flow.target, flow.out, flow.prediction) == ("animal", "runs/demo-flow", "velocity")
    with pytest.raises(ValueError, match="flow variant exists for the animal target only"):
        config_from_args(parser.parse_args(["demo", "--flow", "--target", "covered"]))
    with pytest.raises(ValueError, match="target_classes must be glyphs-blue ids 0..11"):
        DemoConfig(target_classes=[12])
    with pytest.raises(ValueError, match="unknown demo target 'sky'"):
        DemoConfig(target="sky")
    # an explicit field is kept, the rest follow the target; a saved config round-trips unchanged
    mixed = DemoConfig(target="outside", target_classes=[4, 5])
    assert mixed.target_classes == [4, 5] and mixed.target_preset == "glyph-target-outside"
    assert DemoConfig.from_dict(mixed.to_dict()) == mixed
    # a demo_config.json written before targets existed (no "target" key) is an animal demo's, not today's default
    old = {k: v for k, v in animal.to_dict().items() if k != "target"}
    assert DemoConfig.from_dict(old) == animal and DemoConfig.from_dict(old).spec.channels == 1
