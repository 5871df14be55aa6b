"""The one config idiom: round trips, unknown keys, nested configs, tuples, TOML/YAML/JSON files."""
from dataclasses import dataclass, field

import pytest

from domain_guidance.io.config_files import ConfigMixin, read_config_file
from domain_guidance.pipelines.generate import GenerationSettings


@dataclass
class Inner(ConfigMixin):
    rank: int = 4
    targets: tuple[str, ...] = ("qkv",)


@dataclass
class Outer(ConfigMixin):
    name: str = "x"
    interval: tuple[float, float] | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.name == "":
            raise ValueError("name: must not be empty")


def test_round_trip_with_nested_and_tuples():
    cfg = Outer(name="y", interval=(1.0, 2.0), inner=Inner(rank=8, targets=("qkv", "proj")))
    d = cfg.to_dict()
    assert d == {"name": "y", "interval": [1.0, 2.0], "inner": {"rank": 8, "targets": ["qkv", "proj"]}}
    back = Outer.from_dict(d)
    assert back == cfg and isinstance(back.inner, Inner) and back.interval == (1.0, 2.0)


def test_unknown_keys_are_named_with_their_source():
    with pytest.raises(ValueError, match=r"run.toml: unknown Outer key\(s\) \['nmae'\]; expected some of"):
        Outer.from_dict({"nmae": "y"}, source="run.toml")
    with pytest.raises(ValueError, match=r"cfg.inner: unknown Inner key\(s\) \['rnak'\]"):
        Outer.from_dict({"inner": {"rnak": 2}}, source="cfg")


def test_replace_validates_again():
    with pytest.raises(ValueError, match="name: must not be empty"):
        Outer().replace(name="")


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'name = "t"\ninterval = [0, 700]\n[inner]\nrank = 2\n'),
    (".yaml", "name: t\ninterval: [0, 700]\ninner:\n  rank: 2\n"),
    (".json", '{"name": "t", "interval": [0, 700], "inner": {"rank": 2}}'),
])
def test_files_in_three_formats(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    assert Outer.load(path) == Outer(name="t", interval=(0, 700), inner=Inner(rank=2))


def test_bad_files_are_clear(tmp_path):
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(ValueError, match="unknown extension '.ini'"):
        read_config_file(tmp_path / "c.ini")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a mapping at the top level"):
        read_config_file(tmp_path / "c.json")
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_config_file(tmp_path / "d.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml")


def test_generation_settings_use_the_idiom():
    s = GenerationSettings(method="dog", interval=(0, 500), seeds=[1, 2], labels=[0, 1], steps="10")
    assert GenerationSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown GenerationSettings key"):
        GenerationSettings.from_dict({"w": 2.0})
