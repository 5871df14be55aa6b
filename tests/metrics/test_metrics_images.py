"""Loading evaluation image sets: folders, .npz, arrays; and the errors for bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from domain_guidance.pipelines.metrics.images import image_set_sha256, open_images
from tests.metrics.helpers import random_images, write_folder


def _all(image_set, bs=3) -> torch.Tensor:
    return torch.cat(list(image_set.batches(bs)))


def test_folder_round_trip_recursive_sorted(tmp_path):
    imgs = random_images(5, h=12, w=10)
    s = open_images(write_folder(tmp_path / "f", imgs, nested=True))
    assert (s.num_images, s.channels, s.height, s.width) == (5, 3, 12, 10)
    # sorted by relative path: 000, 002, 004, then sub/001, sub/003
    assert torch.equal(_all(s), imgs[[0, 2, 4, 1, 3]])
    assert [b.shape[0] for b in s.batches(2)] == [2, 2, 1]


def test_npz_streamed_and_hash_matches_folder(tmp_path):
    imgs = random_images(7, h=9, w=11, seed=1)
    nhwc = imgs.permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "a.npz", arr_0=nhwc)
    np.savez_compressed(tmp_path / "b.npz", arr_0=nhwc)
    folder = open_images(write_folder(tmp_path / "f", imgs))
    for name in ("a.npz", "b.npz"):
        s = open_images(tmp_path / name)
        assert torch.equal(_all(s, 4), imgs)
        assert image_set_sha256(s) == image_set_sha256(folder) == image_set_sha256(open_images(imgs))
    assert image_set_sha256(open_images(imgs.flip(0))) != image_set_sha256(folder)  # order matters


def test_arrays_and_float_tensors(tmp_path):
    imgs = random_images(3, c=1, h=5, w=5, seed=2)
    assert torch.equal(_all(open_images(imgs[:, 0].numpy())), imgs)  # (N, H, W) numpy
    as_float = imgs.float() / 255
    assert torch.equal(_all(open_images(as_float)), imgs)  # round(255 x) gives the bytes back
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        open_images(as_float * 2)


def test_grayscale_folder_and_mixed_channels(tmp_path):
    gray = random_images(2, c=1, h=8, w=8, seed=3)
    s = open_images(write_folder(tmp_path / "g", gray))
    assert s.channels == 1 and torch.equal(_all(s), gray)
    folder = write_folder(tmp_path / "m", gray)
    Image.fromarray(random_images(1, h=8, w=8)[0].permute(1, 2, 0).numpy()).save(folder / "zz.png")
    s = open_images(folder)
    assert s.channels == 3 and "converted to RGB" in s.notes[0]
    out = _all(s)
    assert torch.equal(out[:2], gray.repeat(1, 3, 1, 1))  # documented conversion: repeat


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no images in"):
        open_images(tmp_path / "empty")


def test_mixed_sizes_named(tmp_path):
    folder = write_folder(tmp_path / "f", random_images(2, h=8, w=8))
    Image.new("RGB", (9, 8)).save(folder / "odd.png")
    with pytest.raises(ValueError, match=r"different sizes.*odd\.png is 9x8"):
        open_images(folder)


def test_unreadable_file_named(tmp_path):
    folder = write_folder(tmp_path / "f", random_images(2, h=8, w=8))
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        open_images(folder)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        open_images(tmp_path / "nowhere")
    np.savez(tmp_path / "k.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(KeyError, match="arr_0"):
        open_images(tmp_path / "k.npz")
    np.savez(tmp_path / "f.npz", arr_0=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        open_images(tmp_path / "f.npz")
    (tmp_path / "deep").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "deep" / "d16.png")
    with pytest.raises(ValueError, match="unsupported image mode"):
        open_images(tmp_path / "deep")
