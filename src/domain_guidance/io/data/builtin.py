"""Built-in offline datasets (``animal-mnist``, ``digits``) and ``load_dataset`` (builtin name or folder).

Both are small grayscale sets held in memory as uint8. Resizing uses PIL bicubic, which is
antialiased when downscaling (its filter support grows with the scale factor); 8x8 digits
(values 0..16) are first mapped to 0..255.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .common import DatasetView, ImageDataset, fingerprint_of, select_indices, to_tensor
from .glyphs import GLYPH_CLASSES, make_glyphs
from .image_folder import ImageFolderDataset

ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGITS_CLASSES = [str(i) for i in range(10)]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (no arbitrary code from a data file)."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:
                from numpy._core.multiarray import _reconstruct  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")


def _animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (10000, 28, 28), labels int64 (10000,)) from the installed ``animal_mnist`` wheel."""
    spec = importlib.util.find_spec("animal_mnist")  # locate without importing: its __init__ imports tensorflow
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("built-in dataset 'animal-mnist' needs the package: pip install --no-deps animal-mnist")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"animal-mnist data file {path} is missing (expected in the animal_mnist wheel)")
        with gzip.open(path, "rb") as f:
            arrays.append(np.asarray(_NumpyOnlyUnpickler(f).load()))
    images, labels = arrays
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise ValueError(f"animal-mnist in {folder}: expected (10000, 28, 28) images and (10000,) labels, "
                         f"got {images.shape} and {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 8, 8) in 0..255, labels int64) from scikit-learn (bundled, offline)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, d.target.astype(np.int64)


# name -> (loader, class names, native resolution, default random_flip)
BUILTINS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], list[str], int, bool]] = {
    "animal-mnist": (_animal_mnist, ANIMAL_MNIST_CLASSES, 28, True),
    "digits": (_digits, DIGITS_CLASSES, 8, False),  # a mirrored digit is not a digit
    # procedural RGB shapes (glyphs.py): class = shape; all hues, or only the blue band; a mirrored crescent is new
    "glyphs": (functools.partial(make_glyphs, "glyphs"), GLYPH_CLASSES, 16, False),
    "glyphs-blue": (functools.partial(make_glyphs, "glyphs-blue"), GLYPH_CLASSES, 16, False),
}


class ArrayImageDataset(ImageDataset):
    """In-memory uint8 images (N, H, W) or (N, H, W, C) with labels; same interface as the folder dataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                 random_flip: bool = True, info: dict[str, Any] | None = None):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be uint8 (N, H, H[, C]) arrays; got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.class_names, self.random_flip = list(class_names), random_flip
        self.resolution, self.channels = images.shape[1], 1 if images.ndim == 3 else images.shape[3]
        self.unlabelled, self.info = False, dict(info or {})
        self._fingerprint: str | None = None

    def load(self, index: int) -> torch.Tensor:
        return to_tensor(self.images[index])  # (C, H, W)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of("arrays", self.images, self.labels, self.class_names)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info}


@functools.lru_cache(maxsize=None)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, duplicate-group id per image) of a built-in, read once per process, read-only."""
    images, labels = BUILTINS[name][0]()
    rows = np.ascontiguousarray(images.reshape(len(images), -1)).view(f"V{images[0].size}").reshape(-1)
    _, groups = np.unique(rows, return_inverse=True)  # equal bytes -> equal group
    for a in (images, labels, groups):
        a.flags.writeable = False
    return images, labels, groups.reshape(-1)


def _class_ids(classes: Sequence[int | str] | None, names: list[str], where: str) -> list[int] | None:
    """Class names or ids -> original ids (a name wins over a numeric string)."""
    if classes is None:
        return None
    ids = []
    for c in classes:
        if isinstance(c, str) and c in names:
            ids.append(names.index(c))
        elif isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.isdigit()):
            ids.append(int(c))
        else:
            raise ValueError(f"unknown class {c!r} for {where}; expected an id or one of {names}")
    return ids


def _resize(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (N, h, w[, 3]) -> (N, resolution, resolution[, 3]) with PIL bicubic."""
    if images.shape[1] == resolution and images.shape[2] == resolution:
        return images
    size = (resolution, resolution)
    return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BICUBIC)) for im in images])


def load_builtin(name: str, *, resolution: int | None = None, channels: int | None = None,
                 classes: Sequence[int | str] | None = None, images_per_class: int | None = None,
                 split: str = "all", test_fraction: float = 0.2, split_seed: int = 0, seed: int = 0,
                 random_flip: bool | None = None) -> ArrayImageDataset:
    """Load a built-in dataset by name (``BUILTINS``) as an in-memory ``ArrayImageDataset``.

    ``classes``: original class ids (or names) kept and relabelled 0..K-1 in the given order.
    ``split``/``test_fraction``/``split_seed``/``images_per_class``/``seed``: see ``select_indices``
    (per-class deterministic train/test split, then a seeded per-class subset). Exact duplicate
    images (animal-mnist has 284 pairs) are kept on the same side of the split.
    ``resolution`` defaults to the native size; ``channels`` (default: native) 3 repeats a gray channel;
    an RGB built-in (``glyphs``) is never turned gray.
    ``random_flip`` defaults to the dataset's own choice (animal-mnist: on, digits: off).
    """
    if name not in BUILTINS:
        raise KeyError(f"unknown built-in dataset {name!r}; available: {sorted(BUILTINS)}")
    loader, names, native, flip_default = BUILTINS[name]
    images, labels, dup_groups = _raw(name)
    native_channels = 1 if images.ndim == 3 else images.shape[3]
    channels = native_channels if channels is None else channels
    if channels not in (1, 3) or channels < native_channels:
        raise ValueError(f"channels must be 1 or 3 (and 3 for the RGB built-in {name!r}); got {channels}")
    ids = _class_ids(classes, names, name)
    idx, new_labels = select_indices(labels, classes=ids, images_per_class=images_per_class, split=split,
                                     test_fraction=test_fraction, split_seed=split_seed, seed=seed, groups=dup_groups)
    kept_ids = ids if ids is not None else sorted(set(labels.tolist()))
    images = _resize(images[idx], resolution or native)  # (N, R, R[, 3])
    if channels == 3 and native_channels == 1:
        images = np.repeat(images[..., None], 3, axis=-1)  # (N, R, R, 3)
    info = {"name": name, "source_classes": kept_ids, "split": split, "test_fraction": test_fraction,
            "split_seed": split_seed, "images_per_class": images_per_class, "seed": seed}
    return ArrayImageDataset(images, new_labels, [names[i] for i in kept_ids],
                             random_flip=flip_default if random_flip is None else random_flip, info=info)


def load_dataset(spec: str | os.PathLike, *, resolution: int | None = None, channels: int | None = None,
                 classes: Sequence[int | str] | None = None, images_per_class: int | None = None,
                 split: str = "all", test_fraction: float = 0.2, split_seed: int = 0, seed: int = 0,
                 random_flip: bool | None = None, **folder_kwargs: Any) -> ImageDataset:
    """A built-in dataset by name, else an image folder at path ``spec`` (defaults 256 px, RGB).

    For folders, ``classes`` are folder names or label ids; the selection options work as for
    built-ins (through a ``DatasetView``); ``folder_kwargs`` go to ``ImageFolderDataset``.
    """
    if str(spec) in BUILTINS:
        return load_builtin(str(spec), resolution=resolution, channels=channels, classes=classes,
                            images_per_class=images_per_class, split=split, test_fraction=test_fraction,
                            split_seed=split_seed, seed=seed, random_flip=random_flip)
    if not Path(spec).expanduser().is_dir():
        raise FileNotFoundError(f"dataset {str(spec)!r} is neither a built-in ({sorted(BUILTINS)}) nor a directory")
    ds = ImageFolderDataset(spec, resolution or 256, channels or 3,
                            random_flip=True if random_flip is None else random_flip, **folder_kwargs)
    if classes is None and images_per_class is None and split == "all":
        return ds
    ids = _class_ids(classes, ds.class_names, str(spec))
    idx, labels = select_indices(ds.labels, classes=ids, images_per_class=images_per_class, split=split,
                                 test_fraction=test_fraction, split_seed=split_seed, seed=seed)
    kept = ids if ids is not None else list(range(ds.num_classes))
    return DatasetView(ds, idx, labels, [ds.class_names[i] for i in kept])
