"""What a user downloaded: an extracted folder, a .zip or a .tar(.gz/.bz2/.xz) archive, read in place.

A ``Source`` lists its files as POSIX paths relative to its top (``food-101/meta/train.txt``),
reads small metadata files (``read``) and streams the images a dataset needs (``stream``) without
extracting the archive first: a tar is read twice from start to end (metadata, then images), a zip
and a folder are read at random. Nothing is downloaded.
"""
from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from ...fingerprints import combine, fingerprint_path

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
METADATA_SUFFIXES = (".txt", ".csv", ".mat", ".json", ".tsv")
METADATA_MAX_BYTES = 256 << 20  # a metadata file larger than this is not read into memory


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _clean(name: str) -> str | None:
    """A member name as a relative POSIX path; None for names that escape the top or are hidden junk."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    if not parts or parts[0] == "/" or ".." in parts:
        return None
    if parts[0] == "__MACOSX" or parts[-1].startswith("._"):  # macOS resource forks in zips
        return None
    return "/".join(parts)


class Source:
    """Base class: ``files`` (sorted relative paths), ``read(path)``, ``stream(paths)``, ``describe()``."""

    path: Path
    files: list[str]

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def stream(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, bytes)`` for each wanted name present in the source (order: the source's)."""
        raise NotImplementedError

    def find(self, suffix: str) -> list[str]:
        """Files whose path ends with the relative path ``suffix`` (matched on whole components)."""
        suffix = suffix.strip("/")
        return [f for f in self.files if f == suffix or f.endswith("/" + suffix)]

    origin: str | None = None  # where an archive read from inside another one came from ("outer.zip!inner.tgz")

    def describe(self) -> dict[str, object]:
        return {"path": self.origin or str(self.path), "kind": type(self).__name__, "files": len(self.files)}

    def fingerprint(self) -> str:
        """Content fingerprint of what was downloaded: the archive's bytes, or every file of the folder."""
        return fingerprint_path(self.path)


class FolderSource(Source):
    def __init__(self, path: Path):
        self.path = path
        files = []
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(path)
            files += [(rel / f).as_posix() for f in filenames if not f.startswith(".")]
        self.files = sorted(f.removeprefix("./") for f in files)

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def stream(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            p = self.path / name
            if p.is_file():
                yield name, p.read_bytes()


class ZipSource(Source):
    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise ValueError(f"--from {path}: not a readable zip archive ({e})") from None
        self._names = {}
        for info in self._zip.infolist():
            clean = _clean(info.filename)
            if clean and not info.is_dir():
                self._names[clean] = info.filename
        self.files = sorted(self._names)

    def read(self, name: str) -> bytes:
        return self._zip.read(self._names[name])

    def stream(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            if name in self._names:
                try:
                    yield name, self._zip.read(self._names[name])
                except (zipfile.BadZipFile, OSError, EOFError) as e:  # a damaged member: reported, not fatal
                    yield name, f"<unreadable archive member: {type(e).__name__}: {e}>".encode()


class TarSource(Source):
    """A tar archive (any compression tarfile knows): one pass lists it and keeps its metadata files."""

    def __init__(self, path: Path):
        self.path = path
        self._meta: dict[str, bytes] = {}
        names = []
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    clean = _clean(m.name)
                    if not clean or not m.isfile():
                        continue
                    names.append(clean)
                    if clean.lower().endswith(METADATA_SUFFIXES + ARCHIVE_SUFFIXES) and m.size <= METADATA_MAX_BYTES:
                        fh = tf.extractfile(m)
                        self._meta[clean] = fh.read() if fh is not None else b""
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"--from {path}: not a readable tar archive ({type(e).__name__}: {e})") from None
        self.files = sorted(set(names))

    def read(self, name: str) -> bytes:
        if name in self._meta:
            return self._meta[name]
        for got, data in self.stream([name]):
            return data
        raise FileNotFoundError(f"{self.path}: no member {name!r}")

    def stream(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        wanted = set(names)
        if not wanted:
            return
        with tarfile.open(self.path, "r:*") as tf:
            try:
                for m in tf:
                    clean = _clean(m.name)
                    if clean in wanted and m.isfile():
                        fh = tf.extractfile(m)
                        yield clean, fh.read() if fh is not None else b""
            except (tarfile.TarError, EOFError, OSError) as e:  # truncated archive: what was read is kept
                yield "<archive>", f"<archive ends early: {type(e).__name__}: {e}>".encode()


class CombinedSource(Source):
    """Several sources as one: the files of part ``i`` appear under its prefix (``cars_train.tgz/...``)."""

    def __init__(self, path: Path, parts: list[tuple[str, Source]], whole_folder: bool = False):
        self.path, self.parts, self.whole_folder = path, parts, whole_folder  # whole_folder: path holds every part
        self.files = sorted(prefix + f for prefix, src in parts for f in src.files)

    def _split(self, name: str) -> tuple[Source, str]:
        for prefix, src in sorted(self.parts, key=lambda ps: -len(ps[0])):
            if name.startswith(prefix):
                return src, name[len(prefix):]
        raise FileNotFoundError(f"{self.path}: no member {name!r}")

    def read(self, name: str) -> bytes:
        src, inner = self._split(name)
        return src.read(inner)

    def stream(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for prefix, src in self.parts:
            wanted = [n[len(prefix):] for n in names if self._split(n)[0] is src]
            for inner, data in src.stream(wanted):
                yield (prefix + inner if not inner.startswith("<") else inner), data

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "parts": [{"prefix": p, **s.describe()} for p, s in self.parts]}

    def fingerprint(self) -> str:
        if self.whole_folder:
            return fingerprint_path(self.path)
        return combine((prefix, src.fingerprint()) for prefix, src in self.parts)


def open_source(path: str | os.PathLike | list) -> Source:
    """A folder, a zip or a tar archive at ``path`` (or several: one combined source); a clear error else.

    Archives inside a folder are opened in place and their files appear under ``<archive name>/``
    (a folder holding cars_train.tgz, cars_test.tgz and car_devkit.tgz is one Stanford Cars source).
    """
    if isinstance(path, (list, tuple)):
        if len(path) == 1:
            return open_source(path[0])
        parts = [(f"{i}:{Path(p).name}/", open_source(p)) for i, p in enumerate(path)]
        return CombinedSource(Path(path[0]).expanduser(), parts)
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--from {p}: does not exist; expected the archive you downloaded (.zip, .tar, "
                                ".tar.gz, .tgz) or the folder you extracted it to")
    if p.is_dir():
        folder = FolderSource(p)
        archives = [f for f in folder.files if is_archive(f)]
        if not archives:
            return folder
        parts: list[tuple[str, Source]] = [("", folder)] if len(archives) < len(folder.files) else []
        parts += [(f + "/", open_source(p / f)) for f in archives]
        return CombinedSource(p, parts, whole_folder=True)
    if zipfile.is_zipfile(p):
        return ZipSource(p)
    if tarfile.is_tarfile(p):
        return TarSource(p)
    raise ValueError(f"--from {p}: neither a folder, a zip nor a tar archive; expected one of {ARCHIVE_SUFFIXES} "
                     "or an extracted folder")


def inner_archives(source: Source) -> list[str]:
    """Archives inside ``source`` (e.g. Caltech101's zip holds 101_ObjectCategories.tar.gz)."""
    return [f for f in source.files if is_archive(f)]
