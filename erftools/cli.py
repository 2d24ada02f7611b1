"""The ``erftools`` console command: a thin layer over the public API.

Each sub-command lives in ``erftools/commands/<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (a callable taking the parsed arguments and returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ._advice import FLAG_ADVICE, flag_advice  # noqa: F401  (flag_advice is used below; both re-exported)
from ._io import ErftoolsError

# module name in erftools.commands, in the order shown by --help
COMMAND_MODULES = ("models", "erf", "shape_bias", "data", "study", "report", "dashboard")


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="erftools",
        description="Effective receptive fields and shape bias of vision models (RepLKNet and any timm model).")
    parser.add_argument("--version", action="version", version=f"erftools {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:  # a command module that fails to import fails the CLI, naming it
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ErftoolsError as exc:
        print(f"erftools {args.command}: error: {flag_advice(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"erftools {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
