"""Packaging: every sub-package is declared, the wheel carries the data files and the licence, and the data folder
is never taken from another package."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M).group(1)
    return set(re.findall(r'"([^"]+)"', block))


def test_every_package_on_disk_is_declared():
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "erftools").rglob("__init__.py")}
    on_disk |= {"erftools._data"} | {f"erftools._data.{d.name}" for d in (REPO / "data").iterdir() if d.is_dir()}
    assert _declared_packages() == on_disk


@pytest.mark.slow
def test_wheel_has_data_licence_and_builds_without_warnings(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "would be ignored" not in out and "is absent from the `packages`" not in out
    wheel = next(tmp_path.glob("erftools-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (REPO / "data").rglob("*"):
        if f.is_file():
            assert "erftools/_data/" + f.relative_to(REPO / "data").as_posix() in names, f
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith("data/") for n in names)  # nothing installed as a top-level 'data' package


def test_data_folder_of_another_package_is_never_used(tmp_path, monkeypatch):
    """An installed erftools next to somebody else's site-packages/data must not read it."""
    import erftools._paths as paths

    fake_pkg = tmp_path / "site-packages" / "erftools"
    fake_pkg.mkdir(parents=True)
    (tmp_path / "site-packages" / "data").mkdir()  # another package's data folder
    monkeypatch.setattr(paths, "__file__", str(fake_pkg / "_paths.py"))
    with pytest.raises(FileNotFoundError):
        paths.data_dir()
    (fake_pkg / "_data").mkdir()
    assert paths.data_dir() == fake_pkg / "_data"
