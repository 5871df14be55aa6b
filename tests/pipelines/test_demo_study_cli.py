"""``dog demo --study``'s options: the map's axes (coverage, lengths, sizes), the ablations, validation."""
from __future__ import annotations

import pytest

from domain_guidance.cli import build_parser
from domain_guidance.cli.demo import config_from_args
from domain_guidance.cli.demo_study import study_config_from_args
from domain_guidance.pipelines.demo.study import StudyConfig


def test_study_cli_options_and_validation() -> None:
    parser = build_parser()

    def parse(*argv: str) -> StudyConfig:
        args = parser.parse_args(["demo", *argv])
        return study_config_from_args(args, config_from_args(args))

    s = parse("--study", "--study-finetune-steps", "250,500", "--study-images-per-class", "10,200",
              "--ablation", "steps", "--ablation", "nine-grid,steps", "--grid-w", "2,4", "--blend", "0.25")
    assert (s.map, s.finetune_steps, s.images_per_class, s.ablations) == (True, [250, 500], [10, 200],
                                                                          ["steps", "nine-grid"])
    assert (s.grid_w, s.blend, s.base.out, s.base.w, s.base.dog_interval) == ([2.0, 4.0], 0.25, "runs/demo-study",
                                                                             [1.5], None)
    assert s.targets == ["covered", "outside"]  # the coverage axis of the glyph benchmark
    assert parse("--study", "--target", "animal").targets == ["animal"]
    assert parse("--study", "--target", "animal").base.out == "runs/demo-study-animal"
    assert parse("--study", "--study-targets", "outside").targets == ["outside"]
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--study", "--study-targets", "sky"])
    only = parse("--ablation", "all", "--w", "1.5,3", "--out", "x", "--dog-interval", "500,999")
    assert not only.map and only.ablations == ["steps", "uncond-guide", "nine-grid"]
    assert only.base.w == [1.5, 3.0] and only.base.out == "x" and only.base.dog_interval == [500.0, 999.0]
    full = parse("--study", "--full")
    assert full.base.out == "runs/demo-study-full"
    assert not full.base.also_without_dropout  # the study's cells fine-tune with dropout only: said, and recorded so
    if hasattr(parser.parse_args(["demo"]), "flow"):  # the flow-matching variant, where the CLI has it
        assert parse("--study", "--flow").base.out == "runs/demo-study-flow"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--ablation", "fig5"])
    for bad, msg in (({"finetune_steps": []}, "finetune_steps must be a non-empty list"),
                     ({"images_per_class": [10, 10]}, "images_per_class must be a non-empty list of distinct"),
                     ({"sampling_steps": [1, 10]}, "sampling_steps must be >= 2"),
                     ({"ablations": ["fig5"]}, r"ablations: unknown \['fig5'\]"),
                     ({"map": False}, "nothing to do"), ({"blend": 2.0}, "blend must be in"),
                     ({"grid_w": [0.5]}, "grid_w must be"), ({"targets": ["covered", "covered"]}, "targets must be")):
        with pytest.raises(ValueError, match=msg):
            StudyConfig(**bad)
    assert StudyConfig.from_dict(StudyConfig().to_dict()) == StudyConfig()
