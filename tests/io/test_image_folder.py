"""Image-folder dataset: layouts, ADM centre crop, seeded flips, unreadable files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from domain_guidance.io.data import ImageFolderDataset, center_crop_arr, hflip
from domain_guidance.io.data.common import parse_key

from .conftest import write_image


def adm_center_crop_reference(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """guided-diffusion / DiT ``center_crop_arr`` verbatim (numpy crop)."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


@pytest.mark.parametrize("size,res", [((300, 200), 64), ((1000, 601), 64), ((20, 33), 64), ((64, 64), 64), ((257, 512), 32)])
def test_center_crop_matches_adm(size, res):
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = center_crop_arr(im, res)
    assert out.size == (res, res)
    np.testing.assert_array_equal(np.asarray(out), adm_center_crop_reference(im, res))


def test_class_folders(tmp_path):
    write_image(tmp_path / "dog" / "1.png", seed=1)
    write_image(tmp_path / "dog" / "nested" / "2.jpg", seed=2)
    write_image(tmp_path / "cat" / "3.webp", seed=3)
    write_image(tmp_path / "cat" / "4.bmp", seed=4)
    write_image(tmp_path / "cat" / "5.JPEG", seed=5)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "cat" / ".hidden.png", seed=6)
    ds = ImageFolderDataset(tmp_path, resolution=16)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2 and not ds.unlabelled
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and len(ds) == 5
    assert [p.name for p in ds.other_files] == ["notes.txt"] and ds.bad_files == []
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    assert -1.0 <= x.min() and x.max() <= 1.0
    expected = np.asarray(center_crop_arr(Image.open(ds.paths[3]).convert("RGB"), 16), dtype=np.float32) / 127.5 - 1
    torch.testing.assert_close(x, torch.from_numpy(expected).permute(2, 0, 1))


def test_single_class_and_unlabelled(tmp_path):
    for i in range(3):
        write_image(tmp_path / "one" / "only" / f"{i}.png", seed=i)
        write_image(tmp_path / "flat" / f"{i}.png", seed=i)
    single = ImageFolderDataset(tmp_path / "one", resolution=8, channels=1)
    assert single.num_classes == 1 and not single.unlabelled and single.class_names == ["only"]
    assert single[0][0].shape == (1, 8, 8)
    flat = ImageFolderDataset(tmp_path / "flat", resolution=8)
    assert flat.unlabelled and flat.num_classes == 1 and flat.labels.tolist() == [0, 0, 0]


def test_mixed_layout_needs_explicit_choice(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "cls" / "b.png")
    with pytest.raises(ValueError, match="layout='classes'"):
        ImageFolderDataset(tmp_path, resolution=8)
    assert len(ImageFolderDataset(tmp_path, resolution=8, layout="classes")) == 1
    assert len(ImageFolderDataset(tmp_path, resolution=8, layout="flat")) == 2


def test_seeded_flip(tmp_path):
    write_image(tmp_path / "c" / "a.png", size=(24, 24))
    ds = ImageFolderDataset(tmp_path, resolution=16)
    base, _ = ds[0]
    assert torch.equal(ds[(0, 123, True)][0], hflip(base))
    assert torch.equal(ds[(0, None, False)][0], base)
    flips = [parse_key((0, s), True)[2] for s in range(40)]
    assert 5 < sum(flips) < 35  # both orientations occur
    for s in range(6):  # the key alone decides
        assert torch.equal(ds[(0, s)][0], hflip(base) if flips[s] else base)
        assert torch.equal(ds[(0, s)][0], ds[(0, s)][0])
    ds.random_flip = False
    assert all(torch.equal(ds[(0, s)][0], base) for s in range(6))


def test_unreadable_files_skipped_and_counted(tmp_path):
    for i in range(6):
        write_image(tmp_path / "c" / f"ok{i}.png", seed=i)
    (tmp_path / "c" / "zero.png").write_bytes(b"")
    (tmp_path / "c" / "text.jpg").write_text("hello, I am not a jpeg")
    good_png = write_image(tmp_path / "tmp.png", size=(64, 64)).read_bytes()
    (tmp_path / "tmp.png").unlink()
    (tmp_path / "c" / "trunc.png").write_bytes(good_png[: len(good_png) // 2])
    write_image(tmp_path / "j.jpg", size=(64, 64))
    good_jpg = (tmp_path / "j.jpg").read_bytes()
    (tmp_path / "j.jpg").unlink()
    (tmp_path / "c" / "trunc.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    ds = ImageFolderDataset(tmp_path, resolution=8, max_bad_fraction=0.5)
    assert len(ds) == 6
    bad = {p.name: r for p, r in ds.bad_files}
    assert set(bad) == {"zero.png", "text.jpg", "trunc.png", "trunc.jpg"}
    assert bad["zero.png"] == "zero-byte file"
    with pytest.raises(ValueError, match=r"4 of 10 image files \(40.0%\).*max_bad_fraction"):
        ImageFolderDataset(tmp_path, resolution=8)


def test_runtime_failure_falls_back_to_same_class(tmp_path):
    for i in range(3):
        write_image(tmp_path / "a" / f"{i}.png", seed=i)
    write_image(tmp_path / "b" / "0.png", seed=9)
    ds = ImageFolderDataset(tmp_path, resolution=8)
    ds.paths[0].write_bytes(b"")  # broken after the scan
    with pytest.warns(UserWarning, match="could not read"):
        x, y = ds[0]
    assert y == 0 and torch.equal(x, ds.load(1)) and len(ds.runtime_bad_files) == 1


def test_errors_for_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="contains no images"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="contains no images"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataset(tmp_path, channels=2)


def test_fingerprint_tracks_files_and_preprocessing(tmp_path):
    write_image(tmp_path / "c" / "a.png")
    fp = ImageFolderDataset(tmp_path, resolution=8).fingerprint
    assert fp == ImageFolderDataset(tmp_path, resolution=8).fingerprint
    assert fp != ImageFolderDataset(tmp_path, resolution=16).fingerprint
    write_image(tmp_path / "c" / "b.png")
    assert fp != ImageFolderDataset(tmp_path, resolution=8).fingerprint
