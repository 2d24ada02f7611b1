"""Small I/O helpers shared by every part of erftools: atomic writes, hashes, provenance.

Every result file is written to a temporary file in the same folder and then renamed, so a crash or a full
disk never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator


class ErftoolsError(RuntimeError):
    """A user-facing error: the message names the problem and the fix; the CLI prints it without a traceback."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        _raise_no_space(exc, path)
        raise
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _raise_no_space(exc, path)
        raise


#: numpy's C writer reports a short write (a disk that fills up mid-file) as ``OSError("N requested and M
#: written")``, without an errno
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def is_no_space(exc: OSError) -> bool:
    """Whether ``exc`` means the disk (or the user's quota) is full: ENOSPC, EDQUOT, or a short write."""
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or bool(_SHORT_WRITE.search(str(exc)))


def _raise_no_space(exc: OSError, path: Path) -> None:
    if is_no_space(exc):
        short = f" (a short write: {exc})" if exc.errno is None else ""
        raise ErftoolsError(
            f"no space left on the device while writing {path}{short}; free some space and run the command "
            "again (files written before this one are intact, and an interrupted run continues)") from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically. NaN/inf are written as null (strict JSON)."""
    return write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_npy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array))
    return Path(path)


def save_figure(path: str | os.PathLike, fig, **kwargs) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        obj = obj.item()
    if hasattr(obj, "tolist"):
        return _json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_strings(items) -> str:
    """A stable hash of a list of strings (an image list, say)."""
    return hashlib.sha256("".join(str(s) + "\n" for s in items).encode("utf-8")).hexdigest()


def versions() -> dict[str, str]:
    """Versions of the interpreter and the libraries that shape a result."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("erftools", "torch", "timm", "numpy", "scipy", "PIL"):
        try:
            mod = sys.modules.get(name) or __import__(name)
        except Exception:  # pragma: no cover - optional
            continue
        out[name if name != "PIL" else "pillow"] = str(getattr(mod, "__version__", "unknown"))
    return out


def cache_dir(kind: str = "") -> Path:
    """The user cache folder of erftools (``$ERFTOOLS_CACHE``, else ``$XDG_CACHE_HOME/erftools``, else
    ~/.cache/erftools)."""
    root = os.environ.get("ERFTOOLS_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "erftools"
    return base / kind if kind else base
