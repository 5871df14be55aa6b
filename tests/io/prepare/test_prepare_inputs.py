"""``dog data prepare`` compares contents, not names: a prepared folder is reused only for the same download
(bytes), and a split whose files are copies of another split's is reported."""
from __future__ import annotations

import tarfile
import zipfile

import pytest

from domain_guidance.io.data.prepare import prepare_dataset
from domain_guidance.io.fingerprints import StageInputsChanged

from . import fakes
from .test_prepare import tree


def _renamed_class(archive, old: str, new: str):
    """Rewrite ``archive`` in place (same path) with class ``old`` renamed ``new`` everywhere."""
    with tarfile.open(archive) as tf:
        files = {m.name.replace(old, new): tf.extractfile(m).read().replace(old.encode(), new.encode())
                 for m in tf if m.isfile()}
    return fakes.write_tar(archive, files)


def test_rerun_from_changed_archive_is_refused_not_reused(tmp_path, capsys):
    archive, out = fakes.food101(tmp_path), tmp_path / "food"
    first = prepare_dataset("food101", archive, out)
    recorded = first["inputs"]["source"]
    assert prepare_dataset("food101", archive, out)["reused"] is True  # the same bytes: reused
    _renamed_class(archive, "baby_back_ribs", "churros")  # the same path, new contents (other classes)
    with pytest.raises(StageInputsChanged, match=rf"--out {out} \(a prepared 'food101'\) was made from other inputs "
                                                 rf"than the current ones \(source: recorded {recorded[:16]}\.\.\., now "
                                                 rf"[0-9a-f]{{16}}\.\.\.\).*pass --overwrite .*or choose another --out"):
        prepare_dataset("food101", archive, out)
    assert sorted(tree(out)) == ["test/apple_pie", "test/baby_back_ribs", "train/apple_pie", "train/baby_back_ribs"]
    from domain_guidance.cli import main

    assert main(["data", "prepare", "food101", "--from", str(archive), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "source: recorded" in err and "--overwrite" in err
    again = prepare_dataset("food101", archive, out, overwrite=True)  # asked for: prepared again from the new bytes
    assert not again.get("reused") and [c["name"] for c in again["classes"]] == ["apple_pie", "churros"]
    assert sorted(tree(out)) == ["test/apple_pie", "test/churros", "train/apple_pie", "train/churros"]
    other = tmp_path / "other"  # another archive (another path) with other images under the same names
    other.mkdir()
    fakes.write_tar(other / "food-101.tar.gz", {**{n: d for n, d in _members(fakes.food101(other)).items()},
                                                "food-101/images/apple_pie/1001.jpg": fakes.image_bytes(77)})
    with pytest.raises(StageInputsChanged, match="source: recorded"):
        prepare_dataset("food101", other / "food-101.tar.gz", out)


def _members(archive) -> dict[str, bytes]:
    with tarfile.open(archive) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def test_prepared_folder_from_a_changed_extracted_folder_is_refused(tmp_path):
    folder = tmp_path / "extracted"
    for name, data in _members(fakes.food101(tmp_path)).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    out = tmp_path / "food"
    prepare_dataset("food101", folder, out)
    (folder / "food-101/images/baby_back_ribs/1003.jpg").write_bytes(fakes.image_bytes(55))  # edited in place
    with pytest.raises(StageInputsChanged, match="source: recorded"):
        prepare_dataset("food101", folder, out)


def _cars_files(tmp_path) -> dict[str, bytes]:
    with zipfile.ZipFile(fakes.stanford_cars(tmp_path)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_stanford_cars_test_split_holds_the_cars_test_files(tmp_path):
    """Train and test files share names (00001.jpg...): the test split must hold cars_test's bytes."""
    files = _cars_files(tmp_path)
    out = tmp_path / "cars"
    m = prepare_dataset("stanford-cars", fakes.stanford_cars(tmp_path), out)
    for split in ("train", "test"):
        for path in (out / split).rglob("*.jpg"):
            assert path.read_bytes() == files[f"cars_{split}/{path.name}"], path
    assert (out / "test" / "002.Ram C_V Cargo Van Minivan 2012" / "00001.jpg").read_bytes() != files[
        "cars_train/00001.jpg"]
    assert m["cross_split_duplicates"] == [] and not any("byte-identical" in w for w in m["warnings"])


def test_test_split_copied_from_train_files_is_reported(tmp_path):
    files = _cars_files(tmp_path)
    for name in [n for n in files if n.startswith("cars_test/")]:
        files[name] = files["cars_train/" + name.split("/")[-1]]  # the test split: copies of train files
    archive = fakes.write_zip(tmp_path / "copied.zip", files)
    m = prepare_dataset("stanford-cars", archive, tmp_path / "cars")
    assert m["cross_split_duplicates"] == [
        ["test/001.AM General Hummer SUV 2000/00002.jpg", "train/002.Ram C_V Cargo Van Minivan 2012/00002.jpg"],
        ["test/002.Ram C_V Cargo Van Minivan 2012/00001.jpg", "train/001.AM General Hummer SUV 2000/00001.jpg"]]
    assert any(w.startswith("2 image(s) are byte-identical in more than one split") for w in m["warnings"])
