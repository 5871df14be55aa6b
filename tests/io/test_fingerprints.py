"""Content fingerprints (io.fingerprints): data by the bytes of its files, weights by their sha256, and the one
check every reused or resumed stage goes through."""
from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from domain_guidance.io.data import ImageFolderDataset
from domain_guidance.io.fingerprints import (StageInputsChanged, check_stage_inputs, fingerprint_path,
                                             fingerprint_weights)


def _images(root, seed: int = 0):
    rng = np.random.default_rng(seed)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _edit_in_place(path) -> None:
    """Change one pixel; keep the file name and its access and modification times."""
    st = path.stat()
    arr = np.asarray(Image.open(path)).copy()
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_folder_fingerprint_follows_bytes_not_names_or_times(tmp_path):
    folder = _images(tmp_path / "x")
    fp = fingerprint_path(folder)
    assert fp == fingerprint_path(folder, workers=1)  # threads do not change it
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # new file times, same bytes
    os.utime(copy / "a" / "0.png", (1, 1))
    assert fingerprint_path(copy) == fp
    _edit_in_place(folder / "a" / "1.png")
    assert fingerprint_path(folder) != fp
    other = _images(tmp_path / "y", seed=1)  # the same file names, other images
    assert fingerprint_path(other) != fp
    (copy / "b" / "1.png").rename(copy / "b" / "9.png")  # the same bytes under another name
    assert fingerprint_path(copy) != fp
    one = copy / "a" / "0.png"
    assert fingerprint_path(one) == hashlib.blake2b(one.read_bytes(), digest_size=32).hexdigest()
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        fingerprint_path(tmp_path / "missing")


def test_image_folder_dataset_fingerprint_is_content(tmp_path):
    folder = _images(tmp_path / "x")
    ds = ImageFolderDataset(folder, resolution=8)
    fp, content = ds.fingerprint, ds.content_fingerprint
    shutil.copytree(folder, tmp_path / "copy")
    assert ImageFolderDataset(tmp_path / "copy", resolution=8).fingerprint == fp
    _edit_in_place(folder / "b" / "0.png")
    edited = ImageFolderDataset(folder, resolution=8)
    assert edited.content_fingerprint != content and edited.fingerprint != fp
    assert ImageFolderDataset(tmp_path / "copy", resolution=16).content_fingerprint == content  # size is not content


def test_weights_fingerprint_is_the_checkpoint_sha256(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"weights")
    assert fingerprint_weights(f) == hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(FileNotFoundError, match="weights"):
        fingerprint_weights(tmp_path / "none.pt")


def test_check_stage_inputs_names_each_change_and_the_remedy():
    rec = {"data": "a" * 64, "base": "b" * 64}
    check_stage_inputs("finetune", rec, dict(rec), "choose another --out")  # unchanged: no error
    with pytest.raises(StageInputsChanged, match=r"finetune was made from other inputs .*\(data: recorded "
                                                 r"aaaaaaaaaaaaaaaa\.\.\., now cccccccccccccccc\.\.\.\); choose "
                                                 r"another --out"):
        check_stage_inputs("finetune", rec, {**rec, "data": "c" * 64}, "choose another --out")
    with pytest.raises(StageInputsChanged, match=r"base: recorded bbbb.*, now None; data: recorded aaaa.*, now "
                                                 r"not recorded"):
        check_stage_inputs("finetune", rec, {"base": None}, "x")
    with pytest.raises(StageInputsChanged, match="no record of the inputs.*older version.*; use a new folder"):
        check_stage_inputs("finetune", None, rec, "use a new folder")
