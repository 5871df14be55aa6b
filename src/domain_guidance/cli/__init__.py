"""The ``dog`` command. Each subcommand lives in its own module with a ``register(subparsers)``.

``main`` turns the library's own errors (a bad value, a missing or corrupt file, an unwritable
output) into one line ``dog <command>: error: ...`` with exit status 2, and Ctrl-C into
``dog <command>: interrupted; ...`` with status 130. ``DOG_DEBUG=1`` re-raises for a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# subcommand name -> module under domain_guidance.cli (imported lazily so `dog --help` is fast)
SUBCOMMANDS = {
    "sample": "sample",
    "finetune": "finetune",
    "pretrain": "finetune",
    "evaluate": "evaluate",
    "sweep": "evaluate",
    "toy": "toy",
    "demo": "demo",
    "data": "data",
    "reproduce": "reproduce",
}

# What is kept when a command is interrupted (Ctrl-C): its results are written atomically, piece by piece.
INTERRUPTED = {
    "finetune": "checkpoint kept (continue with --resume)",
    "pretrain": "checkpoint kept (continue with --resume)",
    "sample": "finished shards kept (rerun the same command to resume)",
    "sweep": "finished shards kept (rerun the same command to resume)",
    "demo": "finished stages kept (rerun the same command to resume)",
    "data": "nothing half-written is kept as prepared (rerun the same command)",
    "reproduce": "finished stages kept (rerun the same command to resume)",
}
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def version() -> str:
    """The installed distribution's version, else the package's ``__version__`` (a source checkout)."""
    from importlib import metadata

    try:
        return metadata.version("domain-guidance")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dog",
        description="Domain Guidance: transfer pre-trained diffusion transformers to new image domains.",
        epilog="Errors are one line; set DOG_DEBUG=1 for the full traceback.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    seen = set()
    for module_name in SUBCOMMANDS.values():
        if module_name in seen:
            continue
        seen.add(module_name)
        try:
            module = importlib.import_module(f"domain_guidance.cli.{module_name}")
        except ModuleNotFoundError as e:
            if e.name == f"domain_guidance.cli.{module_name}":
                continue  # subcommand not installed in this build
            raise
        module.register(sub)
    return parser


def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as an output directory: refuse an existing file or a location we cannot create/write."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{option} {p}: exists and is not a directory; expected a directory to write into")
    _check_writable(p, option)
    return p


def check_out_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as an output file: refuse an existing directory or a location we cannot create/write."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(f"{option} {p}: is a directory; expected a file name to write")
    _check_writable(p.parent if str(p.parent) else Path("."), option, target=p)
    return p


def _check_writable(p: Path, option: str, target: Path | None = None) -> None:
    target = target or p
    probe = p
    while not probe.exists():  # the nearest existing ancestor decides whether we can create the rest
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(f"{option} {target}: {probe} is a file, so nothing can be created under it")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {target}: no permission to write in {probe}")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a bad input or environment (not a bug): reported in one line."""
    import pickle
    import zipfile

    errors: list[type[BaseException]] = [ValueError, KeyError, OSError, zipfile.BadZipFile, pickle.UnpicklingError,
                                         EOFError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    return tuple(errors)


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (a KeyError's text without its repr quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("DOG_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        kept = INTERRUPTED.get(args.command)
        print(f"dog {args.command}: interrupted" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_errors() as e:
        if debug:
            raise
        print(f"dog {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
