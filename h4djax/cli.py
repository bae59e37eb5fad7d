"""`h4d`: the only command-line entry point.

Each subcommand lives in `h4djax/commands/<name>.py` and exposes `register(subparsers)`, which adds its parser and
sets `func(args) -> int`. Errors on bad input (`H4DError`) are printed as one line naming the problem, never as a
traceback from deep inside.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from h4djax.errors import H4DError

# Pipeline order; a module that is not there yet is simply not offered.
SUBCOMMANDS = ("demo", "synth", "calib", "fit", "eval", "sweep", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h4d",
        description="h4djax: multi-view 2D keypoints/video -> 3D poses and SMPL-style bodies, as one JAX program.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"h4djax.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"h4djax.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except H4DError as e:
        print(f"h4d {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"h4d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
