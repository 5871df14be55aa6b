"""Image sets for evaluation: a folder of images, an ADM-style .npz, or an in-memory array.

Every source yields uint8 batches of shape (B, C, H, W) with C = 1 or 3, in a fixed order
(folders: sorted by path relative to the folder, recursive). Conversions, all documented:

- folders: if every image is grayscale ("1", "L", "LA") the set has C = 1; otherwise every
  image is converted with PIL ``convert("RGB")`` (grayscale repeated to 3 channels, alpha and
  palette dropped/expanded) and C = 3. 16-bit and float images are refused.
- .npz: key ``arr_0``, uint8, (N, H, W, C) with C = 1 or 3, or (N, H, W); read in a stream.
- numpy arrays are (N, H, W, C) like the .npz; torch tensors are (N, C, H, W). Float tensors
  in [0, 1] are quantised as ``round(255 x)``, the same bytes a saved PNG would hold.
"""
from __future__ import annotations

import hashlib
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_GRAY_MODES = {"1", "L", "LA"}
_COLOR_MODES = {"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


@dataclass
class ImageSet:
    """A sized, ordered set of images read batch by batch."""

    source: str
    num_images: int
    channels: int
    height: int
    width: int
    _reader: Callable[[int], Iterator[torch.Tensor]] = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def batches(self, batch_size: int = 50) -> Iterator[torch.Tensor]:
        """Yield (B, C, H, W) uint8 tensors; the last batch may be smaller."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self._reader(batch_size)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (source, count, shape, conversions)."""
        return {"source": self.source, "num_images": self.num_images, "channels": self.channels,
                "height": self.height, "width": self.width, "notes": list(self.notes)}


class ImageHasher:
    """sha256 of an image set: its (C, H, W) and the uint8 bytes of every image, in order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._shape: tuple[int, ...] | None = None
        self.count = 0

    def update(self, batch: torch.Tensor) -> None:
        """Add a (B, C, H, W) uint8 batch."""
        if self._shape is None:
            self._shape = tuple(batch.shape[1:])
            self._h.update(f"uint8 CHW {self._shape}|".encode())
        self._h.update(batch.contiguous().cpu().numpy().tobytes())
        self.count += batch.shape[0]

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def image_set_sha256(images: ImageSet, batch_size: int = 256) -> str:
    """Hash an image set without running any network (reads every image once)."""
    hasher = ImageHasher()
    for batch in images.batches(batch_size):
        hasher.update(batch)
    return hasher.hexdigest()


def _from_tensor(x: torch.Tensor, source: str) -> ImageSet:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{source}: expected a (N, C, H, W) tensor with C = 1 or 3, got {tuple(x.shape)}")
    if x.is_floating_point():
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{source}: float images must be in [0, 1] (or pass uint8)")
        x = (x * 255).round().clamp(0, 255).to(torch.uint8)
    elif x.dtype != torch.uint8:
        raise TypeError(f"{source}: expected uint8 or float images, got {x.dtype}")
    x = x.detach().cpu()
    n, c, h, w = x.shape

    def reader(bs: int) -> Iterator[torch.Tensor]:
        for s in range(0, n, bs):
            yield x[s:s + bs]

    return ImageSet(source, n, c, h, w, reader)


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read the header of an .npy stream: (shape, fortran_order, dtype); leaves fh at the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _from_npz(path: Path) -> ImageSet:
    try:
        with zipfile.ZipFile(path) as zf:
            if "arr_0.npy" not in zf.namelist():
                keys = [n.removesuffix(".npy") for n in zf.namelist()]
                raise KeyError(f"{path}: an image .npz needs the key 'arr_0' (ADM layout), found {keys}")
            with zf.open("arr_0.npy") as fh:
                shape, fortran, dtype = _npy_header(fh)  # header only
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:  # truncated, or not an .npz at all
        raise ValueError(f"{path}: cannot read as an .npz of images (truncated or not a numpy .npz?): "
                         f"{type(e).__name__}: {e}") from None
    if dtype != np.uint8 or fortran or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise ValueError(
            f"{path}: arr_0 must be a C-ordered uint8 array (N, H, W, C) with C = 1 or 3 "
            f"or (N, H, W); got dtype {dtype}, shape {shape}, fortran_order={fortran}"
        )
    n, h, w = shape[:3]
    c = shape[3] if len(shape) == 4 else 1
    per_image = h * w * c

    def reader(bs: int) -> Iterator[torch.Tensor]:
        with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as fh:
            _npy_header(fh)
            for s in range(0, n, bs):
                b = min(bs, n - s)
                try:
                    buf = fh.read(b * per_image)
                except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:  # corrupt data after a good header
                    raise ValueError(f"{path}: arr_0 is corrupt at image {s}: {type(e).__name__}: {e}") from None
                if len(buf) != b * per_image:
                    raise ValueError(f"{path}: arr_0 is truncated at image {s}")
                arr = np.frombuffer(buf, np.uint8).reshape(b, h, w, c)  # (B, H, W, C)
                yield torch.from_numpy(arr.transpose(0, 3, 1, 2).copy())  # (B, C, H, W)

    if n == 0:
        raise ValueError(f"{path}: arr_0 holds no images")
    return ImageSet(str(path), n, c, h, w, reader)


def _from_folder(root: Path) -> ImageSet:
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise FileNotFoundError(f"no images in {root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    sizes, modes, unreadable = {}, {}, []
    for p in files:
        try:
            with Image.open(p) as im:
                sizes[p], modes[p] = im.size, im.mode
        except (UnidentifiedImageError, OSError) as e:
            unreadable.append(f"{p} ({e.__class__.__name__})")
    if unreadable:
        raise ValueError(f"{len(unreadable)} unreadable image file(s): " + "; ".join(unreadable[:10]))
    first = files[0]
    odd = next((p for p in files if sizes[p] != sizes[first]), None)
    if odd is not None:
        n_odd = sum(sizes[p] != sizes[first] for p in files)
        raise ValueError(
            f"images in {root} have different sizes: {first} is {sizes[first][0]}x{sizes[first][1]} "
            f"but {odd} is {sizes[odd][0]}x{sizes[odd][1]} ({n_odd} of {len(files)} differ); "
            "resize them to one size first, the metrics resize only to the extractor's input size"
        )
    bad_modes = sorted({m for m in modes.values() if m not in _GRAY_MODES | _COLOR_MODES})
    if bad_modes:
        p = next(p for p in files if modes[p] in bad_modes)
        raise ValueError(f"unsupported image mode(s) {bad_modes} (16-bit or float images), e.g. {p}; "
                         "convert them to 8-bit RGB or grayscale")
    n_gray = sum(modes[p] in _GRAY_MODES for p in files)
    gray = n_gray == len(files)
    notes = [] if gray or n_gray == 0 else [f"{n_gray} grayscale image(s) converted to RGB"]
    w, h = sizes[first]

    def reader(bs: int) -> Iterator[torch.Tensor]:
        for s in range(0, len(files), bs):
            arrs = []
            for p in files[s:s + bs]:
                try:
                    with Image.open(p) as im:
                        a = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.uint8)
                except (OSError, ValueError) as e:
                    raise ValueError(f"cannot decode image {p}: {e}") from e
                arrs.append(a[None] if gray else a.transpose(2, 0, 1))  # (C, H, W)
            yield torch.from_numpy(np.stack(arrs))  # (B, C, H, W)

    return ImageSet(str(root), len(files), 1 if gray else 3, h, w, reader, notes)


def open_images(source: str | Path | torch.Tensor | np.ndarray | ImageSet) -> ImageSet:
    """Open a folder, an ADM-style .npz (``arr_0``), a (N, H, W, C) array or a (N, C, H, W) tensor."""
    if isinstance(source, ImageSet):
        return source
    if isinstance(source, torch.Tensor):
        return _from_tensor(source, "tensor")
    if isinstance(source, np.ndarray):
        if source.ndim == 3:
            source = source[..., None]  # (N, H, W) -> (N, H, W, 1)
        if source.ndim != 4:
            raise ValueError(f"numpy images must be (N, H, W, C) or (N, H, W), got {source.shape}")
        return _from_tensor(torch.from_numpy(np.ascontiguousarray(source.transpose(0, 3, 1, 2))), "array")
    path = Path(source)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _from_npz(path)
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {path}")
    raise ValueError(f"{path}: expected a folder of images or an .npz file with 'arr_0'")
