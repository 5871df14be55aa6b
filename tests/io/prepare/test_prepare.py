"""dog data prepare on fake downloads in each official layout: splits, classes, manifest, hashes, faults."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from domain_guidance.io.data import ImageFolderDataset
from domain_guidance.io.data.prepare import DATASETS, prepare_dataset

from . import fakes


def tree(root: Path) -> dict[str, list[str]]:
    """{split/class: sorted file names} of a prepared folder."""
    out: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.parent.parent.parent == root:
            out.setdefault(f"{p.parent.parent.name}/{p.parent.name}", []).append(p.name)
    return out


def check_hashes(root: Path) -> int:
    """Every line of files.sha256 matches its file, and every image is listed; returns the count."""
    lines = (root / "files.sha256").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json",
                                                                                        "files.sha256"}
    assert files == set(listed)
    return len(listed)


def test_seven_datasets_registered():
    assert sorted(DATASETS) == ["artbench10", "caltech101", "cub200", "df20-mini", "food101", "stanford-cars",
                                "sun397"]


def test_food101_splits_corrupt_file_reported(tmp_path):
    out = tmp_path / "food"
    m = prepare_dataset("food101", fakes.food101(tmp_path), out)
    assert tree(out) == {"test/apple_pie": ["1003.jpg", "1004.jpg"], "test/baby_back_ribs": ["1003.jpg", "1004.jpg"],
                         "train/apple_pie": ["1001.jpg", "1002.jpg"],
                         "train/baby_back_ribs": ["1000.jpg", "1001.jpg", "1002.jpg"]}
    assert m["splits"]["train"]["num_images"] == 5 and m["splits"]["test"]["num_images"] == 4
    assert m["splits"]["train"]["class_counts"] == {"apple_pie": 2, "baby_back_ribs": 3}
    assert m["splits"]["train"]["expected_images"] == 75_750
    assert [c["source"] for c in m["corrupt"]] == ["food-101/images/apple_pie/1000.jpg"]
    assert any("75750" in w for w in m["warnings"])
    assert [c["name"] for c in m["classes"]] == ["apple_pie", "baby_back_ribs"]
    assert check_hashes(out) == 9
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["splits"] == m["splits"]
    ds = ImageFolderDataset(out / "train", resolution=8)
    assert ds.class_names == ["apple_pie", "baby_back_ribs"] and len(ds) == 5


def test_food101_all_images_in_train(tmp_path):
    """--train-set all: train.txt + test.txt into train/ (the follow-up's 101,000), labelled in the manifest."""
    from domain_guidance.cli import main
    from domain_guidance.pipelines.reproduce.comparability import split_of

    archive = fakes.food101(tmp_path)
    assert main(["data", "prepare", "food101", "--from", str(archive), "--out", str(tmp_path / "all"),
                 "--train-set", "all", "--no-progress"]) == 0
    out = tmp_path / "all"
    assert tree(out) == {"train/apple_pie": ["1001.jpg", "1002.jpg", "1003.jpg", "1004.jpg"],
                         "train/baby_back_ribs": ["1000.jpg", "1001.jpg", "1002.jpg", "1003.jpg", "1004.jpg"]}
    m = json.loads((out / "manifest.json").read_text())
    assert m["options"] == {"splits": ["train"], "train_set": "all"} and split_of(m, "train") == "all"
    assert m["splits"]["train"]["expected_images"] == 101_000 and check_hashes(out) == 9
    official = prepare_dataset("food101", archive, tmp_path / "official")
    assert official["options"] == {"splits": ["train", "test"]} and split_of(official, "train") == "official"
    for split in ("train", "test"):  # the same files, byte for byte
        for p in (tmp_path / "official" / split).rglob("*.jpg"):
            assert (out / "train" / p.parent.name / p.name).read_bytes() == p.read_bytes()
    with pytest.raises(ValueError, match="train_set 'most'"):
        prepare_dataset("food101", archive, tmp_path / "bad", train_set="most")
    with pytest.raises(ValueError, match="writes one split"):
        prepare_dataset("food101", archive, tmp_path / "bad2", train_set="all", splits=["test"])


def test_rerun_reuses_and_other_dataset_refused(tmp_path):
    out = tmp_path / "food"
    archive = fakes.food101(tmp_path)
    first = prepare_dataset("food101", archive, out)
    mtime = (out / "manifest.json").stat().st_mtime_ns
    again = prepare_dataset("food101", archive, out)
    assert again["reused"] is True and (out / "manifest.json").stat().st_mtime_ns == mtime
    assert again["splits"] == first["splits"]
    with pytest.raises(ValueError, match="already holds a prepared 'food101'"):
        prepare_dataset("artbench10", fakes.artbench10(tmp_path), out)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        prepare_dataset("food101", archive, tmp_path / "used")


def test_interrupted_run_is_redone(tmp_path):
    out = tmp_path / "food"
    (out / ".partial" / "train" / "apple_pie").mkdir(parents=True)
    (out / ".partial" / "train" / "apple_pie" / "junk.jpg").write_bytes(b"half")
    m = prepare_dataset("food101", fakes.food101(tmp_path), out)
    assert m["splits"]["train"]["num_images"] == 5 and not (out / ".partial").exists()


def test_sun397_partition_files(tmp_path):
    archive, parts = fakes.sun397(tmp_path)
    with pytest.raises(ValueError, match="Training_01.txt"):
        prepare_dataset("sun397", archive, tmp_path / "none")
    out = tmp_path / "sun"
    m = prepare_dataset("sun397", archive, out, partitions=str(parts))
    assert sorted(tree(out)) == ["test/abbey", "test/bakery_shop", "test/castle", "train/abbey", "train/bakery_shop",
                                 "train/castle"]
    assert tree(out)["train/bakery_shop"] == ["sun_shop000.jpg", "sun_shop001.jpg"]
    assert m["splits"]["train"]["num_images"] == 6 and m["splits"]["test"]["num_images"] == 3
    assert m["splits"]["train"]["expected_images"] == 19_850
    assert [c["name"] for c in m["classes"]] == ["/a/abbey", "/b/bakery/shop", "/c/castle"]
    assert check_hashes(out) == 9


def test_sun397_split_lists(tmp_path):
    archive, _ = fakes.sun397(tmp_path)
    lists = {}
    for split, ks in (("train", (0, 1)), ("val", (2,)), ("test", (3,))):
        lists[split] = tmp_path / f"{split}.txt"
        lists[split].write_text("".join(f"{c}/sun_{c.split('/')[-1]}{k:03d}.jpg\n" for c in fakes.SUN_CLASSES
                                        for k in ks))
    m = prepare_dataset("sun397", archive, tmp_path / "sun", split_lists={k: str(v) for k, v in lists.items()})
    assert {s: v["num_images"] for s, v in m["splits"].items()} == {"train": 6, "val": 3, "test": 3}
    assert {s: v["expected_images"] for s, v in m["splits"].items()} == {"train": 76_128, "val": 10_875,
                                                                          "test": 21_750}


def test_df20_mini_metadata_csv_and_missing_image(tmp_path):
    out = tmp_path / "df20"
    m = prepare_dataset("df20-mini", fakes.df20_mini(tmp_path), out)
    t = tree(out)
    assert sorted(t) == ["test/Amanita muscaria", "test/Boletus edulis", "train/Amanita muscaria",
                         "train/Boletus edulis"]
    assert len(t["train/Amanita muscaria"]) == 3 and len(t["train/Boletus edulis"]) == 2
    assert len(m["missing"]) == 1 and m["missing"][0].endswith("-0.JPG")
    assert [(c["name"], c["official_id"]) for c in m["classes"]] == [("Amanita muscaria", 0), ("Boletus edulis", 1)]
    assert m["splits"]["test"]["expected_images"] == 3_640


def test_caltech101_inner_archive_without_background(tmp_path):
    out = tmp_path / "caltech"
    m = prepare_dataset("caltech101", fakes.caltech101(tmp_path), out)
    assert tree(out) == {"train/Faces_easy": [f"image_{k:04d}.jpg" for k in (1, 2, 3)],
                         "train/accordion": [f"image_{k:04d}.jpg" for k in (1, 2, 3)]}
    assert m["splits"]["train"]["expected_images"] == 8_677 and m["options"]["excluded_classes"] == ["BACKGROUND_Google"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the inner archive's scratch copy is gone
    assert m["source"]["path"].endswith("caltech-101.zip!caltech-101/101_ObjectCategories.tar.gz")
    with pytest.raises(ValueError, match="no official test split"):
        prepare_dataset("caltech101", fakes.caltech101(tmp_path), tmp_path / "c2", splits=["train", "test"])


def test_cub200_train_test_split(tmp_path):
    out = tmp_path / "cub"
    m = prepare_dataset("cub200", fakes.cub200(tmp_path), out)
    assert tree(out) == {"test/001.Black_footed_Albatross": ["Black_footed_Albatross_0002.jpg"],
                         "test/002.Laysan_Albatross": ["Laysan_Albatross_0002.jpg"],
                         "train/001.Black_footed_Albatross": ["Black_footed_Albatross_0000.jpg",
                                                              "Black_footed_Albatross_0001.jpg"],
                         "train/002.Laysan_Albatross": ["Laysan_Albatross_0000.jpg", "Laysan_Albatross_0001.jpg"]}
    assert m["splits"]["train"]["expected_images"] == 5_994 and m["classes"][1]["official_id"] == 1


def test_artbench10_imagefolder_release(tmp_path):
    out = tmp_path / "art"
    m = prepare_dataset("artbench10", fakes.artbench10(tmp_path), out)
    assert {k: len(v) for k, v in tree(out).items()} == {"test/baroque": 1, "test/ukiyo_e": 1, "train/baroque": 3,
                                                          "train/ukiyo_e": 3}
    assert m["num_classes"] == 10 and m["splits"]["train"]["num_classes"] == 2


def test_stanford_cars_devkit_mat(tmp_path):
    out = tmp_path / "cars"
    m = prepare_dataset("stanford-cars", fakes.stanford_cars(tmp_path), out)
    assert tree(out) == {"test/001.AM General Hummer SUV 2000": ["00002.jpg"],
                         "test/002.Ram C_V Cargo Van Minivan 2012": ["00001.jpg"],
                         "train/001.AM General Hummer SUV 2000": ["00001.jpg", "00004.jpg"],
                         "train/002.Ram C_V Cargo Van Minivan 2012": ["00002.jpg", "00003.jpg"]}
    assert [c["name"] for c in m["classes"]] == fakes.CAR_NAMES
    assert check_hashes(out) == 6


def test_bad_inputs_name_the_fault(tmp_path):
    with pytest.raises(FileNotFoundError, match="--from"):
        prepare_dataset("food101", tmp_path / "nope.tar.gz", tmp_path / "o")
    with pytest.raises(KeyError, match="unknown dataset 'food-101'"):
        prepare_dataset("food-101", fakes.food101(tmp_path), tmp_path / "o")
    with pytest.raises(ValueError, match="meta/train.txt"):
        prepare_dataset("food101", fakes.cub200(tmp_path), tmp_path / "o2")
    with pytest.raises(ValueError, match="unknown option"):
        prepare_dataset("food101", fakes.food101(tmp_path), tmp_path / "o3", partition=2)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="neither a folder"):
        prepare_dataset("food101", junk, tmp_path / "o4")


def test_stanford_cars_from_the_separate_archives_in_a_folder(tmp_path):
    m = prepare_dataset("stanford-cars", fakes.stanford_cars_archives(tmp_path), tmp_path / "cars")
    assert {s: v["num_images"] for s, v in m["splits"].items()} == {"train": 4, "test": 2}
    assert m["source"]["kind"] == "CombinedSource" and not m["missing"] and not m["corrupt"]


def test_df20_mini_from_two_downloads(tmp_path):
    folder = fakes.df20_mini(tmp_path)
    images = fakes.write_tar(tmp_path / "DF20M.tar.gz", {f"DF20M/{p.name}": p.read_bytes()
                                                         for p in (folder / "DF20M").iterdir()})
    meta = fakes.write_zip(tmp_path / "DF20M-metadata.zip", {p.name: p.read_bytes() for p in folder.glob("*.csv")})
    m = prepare_dataset("df20-mini", [images, meta], tmp_path / "df20")
    assert {s: v["num_images"] for s, v in m["splits"].items()} == {"train": 5, "test": 2}


def test_cli_prepare_and_list(tmp_path, capsys):
    from domain_guidance.cli import main

    assert main(["data", "prepare", "cub200", "--from", str(fakes.cub200(tmp_path)), "--out", str(tmp_path / "c"),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert " train: 4 images (official 5994) in 2 classes" in text and "warning: train: 4 images" in text
    assert main(["data", "prepare", "cub200", "--from", str(tmp_path / "missing.tgz"), "--out",
                 str(tmp_path / "d")]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["data", "list"]) == 0
    assert "stanford-cars" in capsys.readouterr().out


def test_damaged_zip_member_is_reported(tmp_path):
    archive = fakes.write_zip(tmp_path / "art.zip", {
        f"artbench-10-imagefolder-split/train/baroque/{k}.jpg": fakes.image_bytes(k) for k in range(3)})
    raw = bytearray(archive.read_bytes())
    first = raw.find(fakes.image_bytes(0)[100:120])  # inside the first member's stored bytes
    raw[first:first + 8] = b"XXXXXXXX"  # its CRC no longer matches
    archive.write_bytes(bytes(raw))
    m = prepare_dataset("artbench10", archive, tmp_path / "art", splits=["train"])
    assert m["splits"]["train"]["num_images"] == 2
    assert [c["source"] for c in m["corrupt"]] == ["artbench-10-imagefolder-split/train/baroque/0.jpg"]
    assert "BadZipFile" in m["corrupt"][0]["reason"]
