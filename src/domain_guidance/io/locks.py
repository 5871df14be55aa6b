"""One writer per output folder: an exclusive OS lock held while a command checks and writes it.

Every command that writes an output folder (``dog sample``, ``sweep``, ``finetune`` / ``pretrain``,
``evaluate``, ``demo``, ``reproduce``, ``toy``, ``data prepare``) holds :func:`folder_lock` on it:
``fcntl.flock`` on ``FOLDER/.dog.lock``. The OS drops the lock when its process exits, however it
exits (a crash or SIGKILL too), so no stale lock outlives its writer and nothing needs cleaning up.
The lock file names its holder (pid, host, command, start time) for the error a second writer gets;
a clean exit deletes it (after a crash it stays, unlocked, and the next writer takes it over).

A second writer is refused at once with :class:`FolderLocked` naming the folder and the holder; it
does not wait, since the first run may take hours and its settings may not be the second's.
The lock is re-entrant within one process (a command whose stages write the same folder). Under
``torchrun`` the ranks of one run share their folders: rank 0 takes the lock and every rank learns
the outcome, so all raise together. POSIX only (``fcntl``).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .distributed import DistInfo

LOCK_NAME = ".dog.lock"
_HELD: dict[str, list[Any]] = {}  # realpath of a folder -> [open lock file, depth] held by this process


class FolderLocked(OSError):
    """An output folder is being written by another process."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process (it has not written its name yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {since} ({info.get('command', '?')})"


def _acquire(folder: Path) -> str:
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; expected a folder to write into")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise FolderLocked(f"{folder} is being written by {_holder(path)}; two runs writing one folder would "
                               "mix their results: wait for it to finish, or use another output folder") from None
        except BaseException:
            f.close()
            raise
        try:  # the file we locked is still the lock file (a holder deletes it as it releases)
            if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                        "command": " ".join(["dog", *sys.argv[1:]])[:300]}))
    f.flush()
    _HELD[key] = [f, 1]
    return key


def _release(key: str) -> None:
    entry = _HELD[key]
    entry[1] -= 1
    if entry[1] == 0:
        del _HELD[key]
        f = entry[0]
        with contextlib.suppress(OSError):
            os.unlink(Path(key) / LOCK_NAME)  # while still locked: a run's folder keeps no trace of the lock
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _shared_outcome(error: str | None) -> str | None:
    """Rank 0's outcome, on every rank."""
    import torch.distributed as tdist

    if not tdist.is_initialized():  # ranks simulated in one process (tests): each keeps its own outcome
        return error
    box = [error]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, dist: DistInfo | None = None) -> Iterator[Path]:
    """Hold the exclusive lock on ``folder`` (created if missing) for the ``with`` block.

    Raises :class:`FolderLocked` naming the folder and the holder when another process holds it.
    ``dist``: under torchrun only rank 0 locks, and every rank raises when it could not. Without it a
    torchrun worker other than rank 0 (``RANK`` set) does not lock: torchrun stops it when rank 0 fails.
    """
    folder = Path(folder).expanduser()
    main = dist.is_main if dist is not None else os.environ.get("RANK", "0") == "0"  # torchrun: rank 0 locks
    key, error = None, None
    if main:
        try:
            key = _acquire(folder)
        except OSError as e:  # FolderLocked, or the folder cannot be created: every rank must hear of it
            if dist is None or not dist.enabled:
                raise
            error = f"{type(e).__name__}: {e}"
    if dist is not None and dist.enabled:
        error = _shared_outcome(error)
    if error is not None:
        if key is not None:
            _release(key)
        raise FolderLocked(error.removeprefix("FolderLocked: "))
    try:
        yield folder
    finally:
        if key is not None:
            _release(key)


def held(folder: str | os.PathLike) -> bool:
    """Whether this process holds the lock on ``folder``."""
    return os.path.realpath(Path(folder).expanduser()) in _HELD
