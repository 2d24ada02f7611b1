"""Where erftools finds the small data files it ships (the repository's top-level ``data/`` folder)."""
from __future__ import annotations

from pathlib import Path


def data_dir() -> Path:
    """The shipped data folder: ``data/`` of a source checkout, or ``erftools/_data`` of an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "data", here / "_data"):
        if candidate.is_dir():
            return candidate
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
