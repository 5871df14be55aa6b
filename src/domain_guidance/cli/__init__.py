"""The ``dog`` command. Each subcommand lives in its own module with a ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module under domain_guidance.cli (imported lazily so `dog --help` is fast)
SUBCOMMANDS = {
    "sample": "sample",
    "finetune": "finetune",
    "pretrain": "finetune",
    "evaluate": "evaluate",
    "sweep": "evaluate",
    "toy": "toy",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dog",
        description="Domain Guidance: transfer pre-trained diffusion transformers to new image domains.",
    )
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"dog {args.command}: error: {e}", file=sys.stderr)
        return 2

