"""The ``erftools`` console command: a thin layer over the public API.

Each sub-command lives in ``erftools/commands/<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (a callable taking the parsed arguments and returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from ._io import ErftoolsError

# module name in erftools.commands, in the order shown by --help
COMMAND_MODULES = ("models", "erf", "shape_bias", "data", "study", "report", "dashboard")

#: library errors name arguments (for notebook users); on the command line they become flags
FLAG_ADVICE = (
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"\bresume=True\b"), "--resume"),
    (re.compile(r"\bdevice='cpu'"), "--device cpu"),
    (re.compile(r"\bstimuli_dir=DIR\b"), "--stimuli DIR"),
    (re.compile(r"\ballow_incomplete=True\b"), "--allow-incomplete"),
    (re.compile(r"\bmirror=DIR\b"), "--mirror DIR"),
    (re.compile(r"\bbase_url=URL\b"), "--base-url URL"),
    (re.compile(r"\bprepare=False\b"), "--no-prepare"),
    (re.compile(r"\bresults=DIR\b"), "--results DIR"),
    (re.compile(r"\ballow_low_precision=True\b"), "--allow-low-precision"),
    (re.compile(r"\bprecision='fp32'"), "--precision fp32"),
)


def flag_advice(message: str) -> str:
    """A library error message with its argument advice spelled as command-line flags."""
    for pattern, flag in FLAG_ADVICE:
        message = pattern.sub(flag, message)
    return message


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="erftools",
        description="Effective receptive fields and shape bias of vision models (RepLKNet and any timm model).")
    parser.add_argument("--version", action="version", version=f"erftools {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
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
