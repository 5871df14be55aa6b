"""Built-in offline datasets, selection/splits, load_dataset and the seeded key sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from domain_guidance.io.data import DatasetView, SeededKeySampler, load_builtin, load_dataset
from domain_guidance.io.data.builtin import ANIMAL_MNIST_CLASSES, _animal_mnist

from .conftest import write_image


@pytest.fixture(scope="module")
def raw_animals():
    return _animal_mnist()


def test_animal_mnist_full(raw_animals):
    ds = load_builtin("animal-mnist")
    assert len(ds) == 10000 and ds.num_classes == 10 and ds.class_names == ANIMAL_MNIST_CLASSES
    assert np.bincount(ds.labels).tolist() == [1000] * 10 and ds.random_flip
    x, y = ds[1234]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    images, labels = raw_animals
    torch.testing.assert_close(x[0], torch.from_numpy(images[1234]).float() / 127.5 - 1)
    assert y == labels[1234]


def test_class_subset_relabel_and_limit(raw_animals):
    images, labels = raw_animals
    ds = load_builtin("animal-mnist", classes=[7, "cat"], images_per_class=5, seed=3)
    assert ds.class_names == ["horse", "cat"] and ds.labels.tolist() == [0] * 5 + [1] * 5
    again = load_builtin("animal-mnist", classes=[7, 2], images_per_class=5, seed=3)
    other = load_builtin("animal-mnist", classes=[7, 2], images_per_class=5, seed=4)
    assert np.array_equal(ds.images, again.images) and not np.array_equal(ds.images, other.images)
    # every kept image is a real image of its source class
    for img, lab in zip(ds.images, ds.labels):
        src = [7, 2][lab]
        assert (images[labels == src] == img).all(axis=(1, 2)).any()
    with pytest.raises(ValueError, match=r"has only \d+ images in split 'train'"):
        load_builtin("animal-mnist", classes=[0], images_per_class=900, split="train")
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        load_builtin("animal-mnist", classes=["unicorn"])
    with pytest.raises(ValueError, match=r"classes \[12\] not in the dataset"):
        load_builtin("animal-mnist", classes=[12])


def _keys(ds):
    return {ds.images[i].tobytes() for i in range(len(ds))}


def test_disjoint_splits():
    train = load_builtin("animal-mnist", classes=[0, 1], split="train")
    test = load_builtin("animal-mnist", classes=[0, 1], split="test")
    assert len(train) + len(test) == 2000
    assert all(200 <= n <= 201 for n in np.bincount(test.labels))  # whole duplicate groups: may pass by one
    assert not _keys(train) & _keys(test)
    few = load_builtin("animal-mnist", classes=[1], split="train", images_per_class=10)
    assert _keys(few) <= _keys(train) and not _keys(few) & _keys(test)
    # a class's held-out images do not depend on the other classes chosen
    alone = load_builtin("animal-mnist", classes=[1], split="test")
    assert _keys(alone) == {test.images[i].tobytes() for i in np.flatnonzero(test.labels == 1)}


def test_resolution_and_channels():
    ds16 = load_builtin("animal-mnist", classes=[0], images_per_class=3, resolution=16)
    ds32 = load_builtin("animal-mnist", classes=[0], images_per_class=3, resolution=32, channels=3)
    assert ds16[0][0].shape == (1, 16, 16) and ds32[0][0].shape == (3, 32, 32)
    x = ds32[0][0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def test_digits():
    ds = load_builtin("digits")
    assert len(ds) == 1797 and ds.num_classes == 10 and not ds.random_flip
    x, y = ds[0]
    assert x.shape == (1, 8, 8) and y == 0 and x.min() == -1 and 0.5 < x.max() <= 1
    assert torch.stack([ds[i][0] for i in range(50)]).max() == 1
    assert load_dataset("digits", resolution=16, classes=[3], split="test")[0][0].shape == (1, 16, 16)


def test_load_dataset_folder_and_errors(tmp_path):
    for c in ("a", "b", "c"):
        for i in range(5):
            write_image(tmp_path / c / f"{i}.png", seed=i)
    ds = load_dataset(tmp_path, resolution=8)
    assert len(ds) == 15 and ds[0][0].shape == (3, 8, 8)
    view = load_dataset(tmp_path, resolution=8, classes=["c", "a"], images_per_class=2)
    assert isinstance(view, DatasetView) and view.class_names == ["c", "a"] and view.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(view[0][0], ds.load(int(view.indices[0]))) and view.fingerprint != ds.fingerprint
    with pytest.raises(FileNotFoundError, match="neither a built-in"):
        load_dataset(tmp_path / "missing")


def test_seeded_key_sampler():
    one = SeededKeySampler(10, seed=5)
    keys = list(one)
    assert sorted(i for i, _ in keys) == list(range(10)) and keys == list(SeededKeySampler(10, seed=5))
    ranks = [list(SeededKeySampler(10, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert set(ranks[0]) | set(ranks[1]) == set(keys)  # same global keys whatever the world size
    one.set_epoch(1)
    assert list(one) != keys
    one.set_epoch(1, start=4)
    assert list(one) == one.epoch_keys()[4:] and len(one) == 6


def test_dataloader_workers_do_not_change_samples():
    ds = load_builtin("animal-mnist", classes=[0, 1], images_per_class=8)
    sampler = SeededKeySampler(len(ds), seed=0)
    a = [x for x, _ in DataLoader(ds, batch_size=4, sampler=sampler, num_workers=0)]
    b = [x for x, _ in DataLoader(ds, batch_size=5, sampler=sampler, num_workers=2)]
    assert torch.equal(torch.cat(a), torch.cat(b))
