"""``erftools`` with the tiny open_clip test config registered (for the torchrun test, which runs a script)."""
import sys
from pathlib import Path

import open_clip

from erftools.cli import main

open_clip.add_model_config(Path(__file__).with_name("erftools-tiny-clip.json"))
sys.exit(main(sys.argv[1:]))
