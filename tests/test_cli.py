"""The console command itself: a light start (no torch, no timm for --help) and flag advice in error messages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from erftools.cli import flag_advice, main

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["models", "erf", "analyze", "compare", "shape-bias", "data", "study", "report", "dashboard"]


def _modules_after(argv: list[str]) -> set:
    code = ("import json, sys\n"
            "from erftools.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_imports_neither_torch_nor_timm(argv):
    mods = _modules_after(argv)
    heavy = sorted(m for m in ("torch", "timm", "matplotlib", "streamlit", "pandas", "scipy") if m in mods)
    assert not heavy, f"erftools {' '.join(argv)} imported {heavy}"


def test_import_erftools_is_light_until_a_heavy_name_is_used():
    code = ("import sys, erftools\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'import erftools pulled in torch'\n"
            "names = dir(erftools)\n"
            "assert {'create_model', 'compute_erf', 'run_erf', 'analyse_shape_bias', '__version__'} <= set(names)\n"
            "erftools.create_model\n"
            "assert 'torch' in sys.modules\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_library_advice_becomes_flags():
    assert flag_advice("pass overwrite=True to replace it") == "pass --overwrite to replace it"
    assert flag_advice("or pass stimuli_dir=DIR; use device='cpu'") == "or pass --stimuli DIR; use --device cpu"
    assert flag_advice("resume=Trueish") == "resume=Trueish"  # only whole words


def test_cli_error_names_the_flag(shared, tmp_path, capsys):
    import shutil

    (tmp_path / "cat").mkdir()
    shutil.copy(shared / "data" / "cue-conflict" / "cat" / "cat1-airplane1.png", tmp_path / "cat")
    assert main(["shape-bias", "--model", "resnet18", "--weights", "random", "--stimuli", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--allow-incomplete" in err and "allow_incomplete=True" not in err


def test_version_has_one_source():
    import erftools
    from erftools._version import __version__

    text = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = {attr = "erftools._version.__version__"}' in text
    assert erftools.__version__ == __version__


def test_bf16_erf_needs_the_flag_and_says_which(capsys, tmp_path):
    args = ["erf", "--model", "resnet18", "--weights", "random", "--size", "64", "--num-images", "1", "--no-progress",
            "--precision", "bf16", "--out", str(tmp_path / "r")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--allow-low-precision" in err and "allow_low_precision=True" not in err
    assert not (tmp_path / "r" / "erf.json").exists()
