"""Fake downloads of the seven benchmarks in their official layouts (a few tiny images per class)."""
from __future__ import annotations

import csv
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(seed: int, size: tuple[int, int] = (12, 10), fmt: str = "JPEG") -> bytes:
    """A small random RGB image encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


CORRUPT = image_bytes(999)[:40]  # a truncated JPEG: a header and nothing else


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def food101(tmp: Path) -> Path:
    """2 classes, 3 train + 2 test each; the first train image of apple_pie is corrupt."""
    files, train, test, seed = {}, [], [], 0
    for cls in ("apple_pie", "baby_back_ribs"):
        for k in range(5):
            seed += 1
            stem = f"{cls}/{1000 + k}"
            files[f"food-101/images/{stem}.jpg"] = CORRUPT if (cls, k) == ("apple_pie", 0) else image_bytes(seed)
            (train if k < 3 else test).append(stem)
    files["food-101/meta/train.txt"] = ("\n".join(train) + "\n").encode()
    files["food-101/meta/test.txt"] = ("\n".join(test) + "\n").encode()
    files["food-101/meta/classes.txt"] = b"apple_pie\nbaby_back_ribs\n"
    return write_tar(tmp / "food-101.tar.gz", files)


SUN_CLASSES = ("/a/abbey", "/b/bakery/shop", "/c/castle")


def sun397(tmp: Path) -> tuple[Path, Path]:
    """(image archive, Partitions.zip): 3 classes, 4 images each; partition 1 = 2 train + 1 test per class."""
    files, train, test, seed = {}, [], [], 100
    for cls in SUN_CLASSES:
        for k in range(4):
            seed += 1
            rel = f"{cls}/sun_{cls.split('/')[-1]}{k:03d}.jpg"
            files[f"SUN397{rel}"] = image_bytes(seed)
            if k < 2:
                train.append(rel)
            elif k == 2:
                test.append(rel)
    archive = write_tar(tmp / "SUN397.tar.gz", files)
    parts = write_zip(tmp / "Partitions.zip", {
        "Partitions/ClassName.txt": ("\n".join(SUN_CLASSES) + "\n").encode(),
        "Partitions/Training_01.txt": ("\n".join(train) + "\n").encode(),
        "Partitions/Testing_01.txt": ("\n".join(test) + "\n").encode()})
    return archive, parts


def df20_mini(tmp: Path) -> Path:
    """A folder: DF20M/*.JPG + the two CSVs; 2 species, 3 train + 1 test each; one train row has no image."""
    files, rows, seed = {}, {"train": [], "test": []}, 200
    for cid, species in enumerate(("Amanita muscaria", "Boletus edulis")):
        for k in range(4):
            seed += 1
            name = f"{2237851949 + seed}-{k}.JPG"
            split = "train" if k < 3 else "test"
            if not (cid == 1 and k == 0):  # listed in the CSV, absent from the download
                files[f"DF20M/{name}"] = image_bytes(seed)
            rows[split].append({"image_path": name, "class_id": cid, "species": species, "genus": species.split()[0]})
    for split, fname in (("train", "DF20M-train_metadata_PROD.csv"), ("test", "DF20M-public_test_metadata_PROD.csv")):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["image_path", "class_id", "species", "genus"])
        w.writeheader()
        w.writerows(rows[split])
        files[fname] = buf.getvalue().encode()
    return write_folder(tmp / "df20m", files)


def caltech101(tmp: Path) -> Path:
    """The official zip: caltech-101/101_ObjectCategories.tar.gz inside; 2 classes x 3 + BACKGROUND_Google x 2."""
    inner, seed = {}, 300
    for cls, n in (("accordion", 3), ("Faces_easy", 3), ("BACKGROUND_Google", 2)):
        for k in range(n):
            seed += 1
            inner[f"101_ObjectCategories/{cls}/image_{k + 1:04d}.jpg"] = image_bytes(seed)
    tar = write_tar(tmp / "101_ObjectCategories.tar.gz", inner)
    return write_zip(tmp / "caltech-101.zip", {"caltech-101/101_ObjectCategories.tar.gz": tar.read_bytes(),
                                               "caltech-101/show_annotation.m": b"% not needed\n"})


def cub200(tmp: Path) -> Path:
    """CUB_200_2011.tgz: 2 classes x 3 images; images 1, 2, 4, 5 train, 3 and 6 test."""
    files, images, split, labels, seed = {}, [], [], [], 400
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    i = 0
    for c, cls in enumerate(classes):
        for k in range(3):
            i, seed = i + 1, seed + 1
            rel = f"{cls}/{cls.split('.')[1]}_{k:04d}.jpg"
            files[f"CUB_200_2011/images/{rel}"] = image_bytes(seed)
            images.append(f"{i} {rel}")
            split.append(f"{i} {0 if k == 2 else 1}")
            labels.append(f"{i} {c + 1}")
    for name, lines in (("images.txt", images), ("train_test_split.txt", split), ("image_class_labels.txt", labels),
                        ("classes.txt", [f"{c + 1} {n}" for c, n in enumerate(classes)])):
        files[f"CUB_200_2011/{name}"] = ("\n".join(lines) + "\n").encode()
    return write_tar(tmp / "CUB_200_2011.tgz", files)


def artbench10(tmp: Path) -> Path:
    """The ImageFolder release (uncompressed tar): 2 styles, 3 train + 1 test each, 16 x 16 JPEGs."""
    files, seed = {}, 500
    for style in ("baroque", "ukiyo_e"):
        for k in range(4):
            seed += 1
            split = "train" if k < 3 else "test"
            files[f"artbench-10-imagefolder-split/{split}/{style}/{style}-{k}.jpg"] = image_bytes(seed, (16, 16))
    return write_tar(tmp / "artbench-10-imagefolder-split.tar", files, mode="w")


CAR_NAMES = ["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012"]


def _annotations(fnames: list[str], labels: list[int]) -> np.ndarray:
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    arr = np.zeros((1, len(fnames)), dtype=dtype)
    for i, (f, c) in enumerate(zip(fnames, labels)):
        arr[0, i] = (np.array([[1]]), np.array([[1]]), np.array([[8]]), np.array([[8]]), np.array([[c]]), np.array([f]))
    return arr


def stanford_cars(tmp: Path) -> Path:
    """One zip: devkit/*.mat, cars_test_annos_withlabels.mat, cars_train/, cars_test/; 2 classes."""
    from scipy.io import savemat

    def mat(d: dict) -> bytes:
        buf = io.BytesIO()
        savemat(buf, d)
        return buf.getvalue()

    files, seed = {}, 600
    train = (["00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"], [1, 2, 2, 1])
    test = (["00001.jpg", "00002.jpg"], [2, 1])
    for split, (names, _) in (("train", train), ("test", test)):
        for n in names:
            seed += 1
            files[f"cars_{split}/{n}"] = image_bytes(seed)
    files["devkit/cars_meta.mat"] = mat({"class_names": np.array([CAR_NAMES], dtype=object)})
    files["devkit/cars_train_annos.mat"] = mat({"annotations": _annotations(*train)})
    files["cars_test_annos_withlabels.mat"] = mat({"annotations": _annotations(*test)})
    return write_zip(tmp / "stanford-cars.zip", files)


def stanford_cars_archives(tmp: Path) -> Path:
    """The same files as the official separate downloads, in one folder: three .tgz and the test labels."""
    with zipfile.ZipFile(stanford_cars(tmp)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    folder = tmp / "cars-downloads"
    folder.mkdir()
    for archive, prefix in (("cars_train.tgz", "cars_train/"), ("cars_test.tgz", "cars_test/"),
                            ("car_devkit.tgz", "devkit/")):
        write_tar(folder / archive, {n: d for n, d in files.items() if n.startswith(prefix)})
    (folder / "cars_test_annos_withlabels.mat").write_bytes(files["cars_test_annos_withlabels.mat"])
    return folder
