"""Where erftools finds the small data files it ships (the repository's top-level ``data/`` folder)."""
from __future__ import annotations

from pathlib import Path


def _is_source_checkout(root: Path) -> bool:
    """Whether ``root`` is erftools' own source tree (so its ``data/`` is ours, not another package's)."""
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    return 'name = "erftools"' in text


def data_dir() -> Path:
    """The shipped data folder: ``erftools/_data`` of an installed wheel, or ``data/`` of erftools' own source
    checkout (an editable install). A ``data/`` folder next to an installed package (``site-packages/data``, which
    belongs to somebody else) is never used."""
    here = Path(__file__).resolve().parent
    if (here / "_data").is_dir():
        return here / "_data"
    if (here.parent / "data").is_dir() and _is_source_checkout(here.parent):
        return here.parent / "data"
    try:  # installed wheel: data/ is mapped to the package erftools._data
        import importlib.resources as resources

        return Path(str(resources.files("erftools._data")))
    except Exception as exc:  # pragma: no cover - broken install
        raise FileNotFoundError("erftools' data folder is missing; reinstall erftools") from exc


def data_file(*parts: str) -> Path:
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"erftools' data file {path} is missing; reinstall erftools")
    return path
