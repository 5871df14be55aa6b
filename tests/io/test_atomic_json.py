"""io.atomic: strict JSON (NaN/inf refused with the key path), atomic replacement, fsync helper."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from domain_guidance.io import checkpoints as ck
from domain_guidance.io.atomic import dumps_json, fsync_path, write_json
from tests.core.helpers import tiny_dit


def test_write_json_is_strict_and_sorted(tmp_path):
    path = write_json(tmp_path / "a" / "settings.json", {"b": [1, 2.5], "a": {"path": Path("/x"), "n": None}})
    text = path.read_text()
    assert text == '{\n  "a": {\n    "n": null,\n    "path": "/x"\n  },\n  "b": [\n    1,\n    2.5\n  ]\n}\n'
    assert json.loads(text) == {"a": {"n": None, "path": "/x"}, "b": [1, 2.5]}


@pytest.mark.parametrize("bad, where", [
    ({"metrics": {"fid": float("nan")}}, "metrics.fid"),
    ({"rows": [{"w": 1.0}, {"w": 2.0, "kid": [0.1, -math.inf]}]}, "rows[1].kid[1]"),
    ({"scale": np.float64("inf")}, "scale"),  # numpy float64 is a float: caught too
    ([1.0, (2.0, float("nan"))], "[1][1]"),
    (float("nan"), "<top level>"),
])
def test_nonfinite_values_are_refused_with_their_key_path(tmp_path, bad, where):
    path = tmp_path / "results.json"
    path.write_text('{"good": 1}\n')
    with pytest.raises(ValueError) as e:
        write_json(path, bad)
    msg = str(e.value)
    assert str(path) in msg and f"at {where};" in msg and "NaN/inf are not valid JSON" in msg
    assert path.read_text() == '{"good": 1}\n'  # the previous file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_every_offending_key_is_named():
    with pytest.raises(ValueError, match=r"at a, b\.c, e, f, g \(and 2 more\);"):
        dumps_json({k: float("nan") for k in "abefgh"} | {"b": {"c": math.inf}, "d": [-math.inf]}, "x")


def test_checkpoint_metadata_with_nan_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"metadata: refusing to write non-finite numbers .* at metadata\.loss;"):
        ck.save_checkpoint(tmp_path / "ckpt", tiny_dit(), tiny_dit().config, {"loss": float("nan")})
    assert not (tmp_path / "ckpt").exists() and list(tmp_path.iterdir()) == []


def test_fsync_path_files_and_directories(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    fsync_path(f)
    fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_path(tmp_path / "missing")  # a file that is not there is an error, not a silent no-op
