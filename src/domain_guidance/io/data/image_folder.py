"""A dataset over an image folder: ``root/<class>/*.png`` (ImageFolder) or images directly in root.

Preprocessing is ADM/DiT's ``center_crop_arr``. Unreadable files (zero-byte, truncated, not an
image) are found at construction, skipped, counted and listed in ``bad_files``; too many of them
is an error. Flips are driven by the sample key (see ``common``), never by a global RNG.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..fingerprints import file_digests
from .common import ImageDataset, fingerprint_of, to_tensor

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """ADM/DiT centre crop: BOX-halve while the short side >= 2 * size, BICUBIC to size, crop."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    w, h = pil_image.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    return pil_image.crop((left, top, left + image_size, top + image_size))


def check_image(path: Path) -> str | None:
    """None if ``path`` decodes fully with PIL, else the reason it cannot be used."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(path) as im:
            im.verify()  # structure and checksums; the object is unusable afterwards
        with Image.open(path) as im:
            im.load()  # full decode: catches truncated data that verify() misses
    except Exception as e:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(e).__name__}: {e}"
    return None


def _list_images(folder: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, sorted, hidden entries skipped."""
    if recursive:
        files = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath) / f for f in filenames]
    else:
        files = [p for p in folder.iterdir() if p.is_file()]
    files = sorted(p for p in files if not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMG_EXTENSIONS]
    return images, [p for p in files if p.suffix.lower() not in IMG_EXTENSIONS]


class ImageFolderDataset(ImageDataset):
    """Images of ``root`` preprocessed to ``(channels, resolution, resolution)`` in [-1, 1].

    ``layout``: "classes" (one sub-folder per class, searched recursively, classes sorted by
    name -> label), "flat" (every image under root, one class, ``unlabelled=True``, label 0) or
    "auto" (classes when root holds only sub-folders with images, flat when it holds only images).
    ``validate=True`` decodes every file once at construction (``scan_workers`` threads); files
    that fail are skipped and listed in ``bad_files`` as ``(path, reason)``; more than
    ``max_bad_fraction`` of them raises. A file that fails later is replaced by the next image of
    the same class (with a warning, listed in ``runtime_bad_files`` of that process).
    """

    def __init__(self, root: str | os.PathLike, resolution: int = 256, channels: int = 3, *,
                 random_flip: bool = True, layout: str = "auto", validate: bool = True,
                 max_bad_fraction: float = 0.01, scan_workers: int = 4):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a directory")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB); got {channels}")
        if resolution < 1:
            raise ValueError(f"resolution must be a positive int; got {resolution}")
        self.resolution, self.channels, self.random_flip = int(resolution), channels, random_flip
        self.layout = self._resolve_layout(layout)
        self.unlabelled = self.layout == "flat"

        candidates: list[tuple[Path, int]] = []
        self.other_files: list[Path] = []  # files without an image extension: ignored, not "bad"
        if self.unlabelled:
            self.class_names = [self.root.name or "images"]
            images, self.other_files = _list_images(self.root, recursive=True)
            candidates = [(p, 0) for p in images]
        else:
            self.class_names = sorted(d.name for d in self._class_dirs())
            for label, name in enumerate(self.class_names):
                images, others = _list_images(self.root / name, recursive=True)
                candidates += [(p, label) for p in images]
                self.other_files += others
        if not candidates:
            raise ValueError(f"image folder {self.root} contains no images with extensions {IMG_EXTENSIONS}")

        self.bad_files: list[tuple[Path, str]] = []
        if validate:
            with ThreadPoolExecutor(max(1, scan_workers)) as pool:
                reasons = list(pool.map(check_image, [p for p, _ in candidates]))
            self.bad_files = [(p, r) for (p, _), r in zip(candidates, reasons) if r is not None]
            candidates = [c for c, r in zip(candidates, reasons) if r is None]
        n_bad, n_all = len(self.bad_files), len(candidates) + len(self.bad_files)
        if n_bad and (n_bad > max_bad_fraction * n_all or not candidates):
            examples = "; ".join(f"{p} ({r})" for p, r in self.bad_files[:5])
            raise ValueError(f"image folder {self.root}: {n_bad} of {n_all} image files ({100 * n_bad / n_all:.1f}%) "
                             f"are unreadable, above max_bad_fraction={max_bad_fraction:.2%}; e.g. {examples}")
        if not self.unlabelled:
            counts = np.bincount([lab for _, lab in candidates], minlength=len(self.class_names))
            empty = [self.class_names[i] for i in np.flatnonzero(counts == 0)]
            if empty:
                raise ValueError(f"image folder {self.root}: class folders {empty} contain no readable images")
        self.paths = [p for p, _ in candidates]
        self.labels = np.array([lab for _, lab in candidates], dtype=np.int64)
        self.runtime_bad_files: list[tuple[Path, str]] = []
        self._content_fingerprint: str | None = None

    def _class_dirs(self) -> list[Path]:
        return [d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]

    def _resolve_layout(self, layout: str) -> str:
        if layout in ("classes", "flat"):
            return layout
        if layout != "auto":
            raise ValueError(f"layout must be 'auto', 'classes' or 'flat'; got {layout!r}")
        top_images, _ = _list_images(self.root, recursive=False)
        class_dirs = [d for d in self._class_dirs() if _list_images(d, recursive=True)[0]]
        if top_images and class_dirs:
            raise ValueError(f"image folder {self.root} holds both {len(top_images)} images and {len(class_dirs)} "
                             "sub-folders with images: pass layout='classes' (ignore the loose images) or "
                             "layout='flat' (one class, every image)")
        return "classes" if class_dirs else "flat"

    def open_image(self, path: Path) -> Image.Image:
        """Decode, convert to RGB/L and centre-crop one file (PIL image, ``resolution`` square)."""
        with Image.open(path) as im:
            im = im.convert("RGB" if self.channels == 3 else "L")
        return center_crop_arr(im, self.resolution)

    def load(self, index: int) -> torch.Tensor:
        path, tried = self.paths[index], 0
        while True:
            try:
                return to_tensor(np.asarray(self.open_image(path), dtype=np.uint8))  # (C, H, W)
            except Exception as e:  # noqa: BLE001 - any decode failure: fall back, do not kill the run
                self.runtime_bad_files.append((path, f"{type(e).__name__}: {e}"))
                warnings.warn(f"could not read {path} ({type(e).__name__}: {e}); using another image of its class")
                same = np.flatnonzero(self.labels == self.labels[index])
                tried += 1
                if tried >= min(len(same), 10):
                    raise OSError(f"image folder {self.root}: {tried} images of class "
                                  f"{self.class_names[self.labels[index]]!r} failed to load; last {path}") from e
                path = self.paths[same[(np.searchsorted(same, index) + tried) % len(same)]]

    @property
    def content_fingerprint(self) -> str:
        """Which images with which labels: relative paths and the bytes of every file, labels, classes.

        File contents, not names or times: a pixel edited in place changes it, a copied folder keeps
        it (see ``io.fingerprints``). Computed once per dataset object (one read of every file).
        """
        if self._content_fingerprint is None:
            names = [p.relative_to(self.root).as_posix() for p in self.paths]
            self._content_fingerprint = fingerprint_of("image_folder_files", list(zip(names, file_digests(self.paths))),
                                                       self.labels, list(self.class_names))
        return self._content_fingerprint

    @property
    def fingerprint(self) -> str:
        """The content fingerprint with the layout and the preprocessing (size, channels, crop)."""
        return fingerprint_of("image_folder", self.layout, self.resolution, self.channels, "center_crop_arr",
                              self.content_fingerprint)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.root), "layout": self.layout,
                "bad_files": len(self.bad_files), "other_files": len(self.other_files)}
