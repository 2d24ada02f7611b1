"""The flat public API and the console command's plumbing."""
import subprocess
import sys

import erftools


def test_every_public_name_resolves():
    for name in erftools.__all__:
        assert getattr(erftools, name) is not None, name


def test_console_command_lists_all_subcommands():
    out = subprocess.run([sys.executable, "-m", "erftools.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("models", "erf", "analyze", "compare", "shape-bias", "data", "report", "dashboard"):
        assert cmd in out.stdout, cmd
