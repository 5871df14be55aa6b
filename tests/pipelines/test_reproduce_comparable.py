"""dog reproduce: whether a row is comparable to the published number, field by field (each field that decides
the number, changed alone, makes the row not comparable and is the one named), and the published defaults."""
from __future__ import annotations

import copy

import pytest

from domain_guidance.pipelines.reproduce import resolve, train_config
from domain_guidance.pipelines.reproduce.comparability import (FIELDS, comparable, first_difference, protocol_of,
                                                               published_protocol, recipe_of, split_of)
from domain_guidance.pipelines.reproduce.table import markdown, rows_of


def _score(method: str = "dog", **over) -> dict:
    """A score record as scoring.score_samples writes it for a published-protocol row."""
    s = {"method": method, "w": 1.0 if method == "unguided" else 1.5, "protocol": "dgm-eval-clean",
         "num_samples": 10_000, "reference_max_images": 10_000, "reference_seed": 13579, "num_reference": 10_000,
         "reference_folder_images": 101_000, "metrics": {"fid": 11.0},
         "sampling": {"sampler": "ddpm", "steps": "50", "method": method, "scale": 1.5,
                      "channels": None if method == "unguided" else 3}}
    for k, v in over.items():
        if k in s["sampling"]:
            s["sampling"][k] = v
        else:
            s[k] = v
    return s


@pytest.fixture
def published(tmp_path):
    cfg = resolve("food101", overrides={"base": "DiT-XL-2-256x256.pt"})
    return cfg, recipe_of(train_config(cfg, tmp_path))


def test_published_defaults_are_the_published_protocol():
    cfg = resolve("food101")
    assert (cfg.channels, cfg.reference_max_images, cfg.reference_seed) == (3, 10_000, 13579)
    assert cfg.prepare_options == {"train_set": "all"}  # Food-101: train + test, as the follow-up's script
    assert resolve("cub200").prepare_options == {} and resolve("food101", "cpu-tiny").prepare_options == {}
    assert resolve("food101", "published-all-channels").channels is None
    assert resolve("food101", "published-250").channels == 3
    with pytest.raises(ValueError, match="channels"):
        resolve("food101", overrides={"channels": 0})


def test_every_field_that_decides_the_number_is_compared(published, tmp_path):
    cfg, recipe = published
    ours = protocol_of(_score(), "all", recipe)
    assert first_difference(ours, published_protocol("food101", "dog")) is None
    # unguided: w and channels do not apply (the published protocol's channels=3 does not mark it different)
    assert comparable(protocol_of(_score("unguided"), "all", recipe), published_protocol("food101", "unguided"))
    other_recipe = recipe_of(train_config(cfg.replace(train={"lr": 1e-3}), tmp_path))
    changed = {  # field -> (score overrides, split, recipe): one field off the published protocol at a time
        "eval_protocol": ({"protocol": "pytorch-fid"}, "all", recipe),
        "reference": ({"reference_max_images": None}, "all", recipe),
        "num_samples": ({"num_samples": 50_000}, "all", recipe),
        "sampler": ({"sampler": "ddim"}, "all", recipe),
        "steps": ({"steps": "250"}, "all", recipe),
        "w": ({"w": 3.0, "scale": 3.0}, "all", recipe),  # a DoG row at w = 3
        "channels": ({"channels": None}, "all", recipe),  # every latent channel guided
        "split": ({}, "official", recipe),  # the 75,750-image train split instead of all 101,000
        "recipe": ({}, "all", other_recipe),
    }
    assert set(changed) == set(FIELDS)
    for field, (over, split, rec) in changed.items():
        ours = protocol_of(_score(**over), split, rec)
        why = first_difference(ours, published_protocol("food101", "dog"))
        assert why is not None and why.startswith(field), (field, why)
    assert first_difference(protocol_of(_score(reference_seed=0), "all", recipe),
                            published_protocol("food101", "dog")).startswith("reference")
    assert "lr 0.001 vs 0.0001" in first_difference(protocol_of(_score(), "all", other_recipe),
                                                    published_protocol("food101", "dog"))
    # the published split is per benchmark: CUB's official train split is its published one
    assert comparable(protocol_of(_score(), "official", recipe), published_protocol("cub200", "dog"))
    broken = copy.deepcopy(ours)
    del broken["channels"]
    with pytest.raises(KeyError, match="channels"):
        first_difference(broken, published_protocol("food101", "dog"))


def test_split_labels_from_the_manifest():
    assert split_of({"options": {"splits": ["train"], "train_set": "all"}}, "train") == "all"
    assert split_of({"options": {"splits": ["train", "test"]}}, "train") == "official"
    assert split_of({"options": {"splits": ["train"], "train_set": "official"}}, "train") == "official"
    assert split_of({"options": {"partition": 1, "split_lists": {}}}, "train") == "partition 1"
    assert split_of({"options": {"partition": None, "split_lists": {"train": "/l.txt"}}}, "train") == "split lists"
    assert split_of(None, "train") == "unknown" and split_of({"options": {}}, "test") == "official:test"


def test_rows_say_channels_reference_split_and_why_not(published):
    cfg, recipe = published
    scores = [_score("unguided"), _score(), _score("cfg", channels=None)]
    rows = rows_of(cfg, scores, "all", recipe)
    assert [(r["method"], r["comparable_to_published"]) for r in rows] == [
        ("unguided", True), ("cfg", False), ("dog", True)]
    assert rows[1]["differs_from_published"] == "channels ('all' vs published 3)"
    assert rows[2]["channels"] == 3 and rows[2]["split"] == "all"
    assert rows[2]["reference"] == "10,000 of 101,000 real images (all split; nsample 10000 seed 13579)"
    table = markdown(cfg, rows)
    assert "| cfg | 1.5 | all | dgm-eval-clean | 10000 | 11.00 |" in table and "| no: channels |" in table
    assert "| dog | 1.5 | 3 | dgm-eval-clean |" in table and "reference: 10,000 of 101,000" in table
