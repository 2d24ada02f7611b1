"""The on-disk format of a run, shared by the CLI (writer), the report and the dashboard (readers).

A *run folder* holds the results of one measurement of one model:

ERF run (``erftools erf --out DIR``)
    ``erf.json``   the record (``"kind": "erf"``): model info, weights source and sha256, image list and its hash,
                   size, sampler, seed, counts, area ratios, radial profile, timings, versions
    ``erf.npy``    float32 (H, W) mean contribution matrix (``stored_downsample`` > 1 in the record when it was
                   block-summed for display, e.g. the committed examples)
    ``erf.png``    the heatmap

Shape-bias run (``erftools shape-bias --out DIR``)
    ``summary.json``   the record (``"kind": "shape-bias"``): shape bias, fractions, per category, ci95, ...
    ``decisions.csv``  per-trial decisions, model-vs-human schema
    ``*.png``          plots

Every record is written atomically and carries ``"schema": 1`` and ``"complete": true`` only once everything else
in the folder is written, so a reader can tell a finished run from an interrupted one.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import ErftoolsError

SCHEMA = 1
ERF_RECORD = "erf.json"
ERF_MATRIX = "erf.npy"
ERF_FIGURE = "erf.png"
SB_RECORD = "summary.json"
SB_DECISIONS = "decisions.csv"
RECORD_FILES = {"erf": ERF_RECORD, "shape-bias": SB_RECORD}


class ResultError(ErftoolsError):
    """A result folder is missing, partial or malformed."""


@dataclass
class Run:
    kind: str  # "erf" or "shape-bias"
    path: Path  # the run folder
    record: dict
    root: Path | None = None  # the results folder it was found in; its files are read only from inside it

    def file(self, name: str) -> Path:
        """The real path of the file ``name`` of this run, refused (:class:`ResultError`) when it resolves outside
        the results folder (or, for a run made by hand without ``root``, outside the run folder)."""
        return checked_path(self.root if self.root is not None else self.path, self.path / name)

    @property
    def name(self) -> str:
        return self.record.get("label") or self.record.get("model", {}).get("name") or self.path.name

    @property
    def complete(self) -> bool:
        return bool(self.record.get("complete"))


def read_record(folder: str | os.PathLike, kind: str, root: str | os.PathLike | None = None) -> dict:
    """Read and check the JSON record of a run folder; raise :class:`ResultError` with a clear message.

    With ``root`` (the results folder) the record is read only when its real path lies inside ``root``.
    """
    folder = Path(folder)
    path = folder / RECORD_FILES[kind]
    if root is not None:
        path = checked_path(root, path)
    if not path.is_file():
        raise ResultError(f"{folder} is not a {kind} result folder: {path.name} is missing")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path} is unreadable or not valid JSON ({exc}); re-run the measurement") from exc
    if not isinstance(record, dict) or record.get("kind") != kind:
        raise ResultError(f"{path} is not a {kind} record (kind={record.get('kind') if isinstance(record, dict) else None!r})")
    return record


def find_runs(root: str | os.PathLike, kind: str | None = None, max_depth: int = 4) -> list[Run]:
    """All run folders below ``root`` (sorted by path). Malformed records are skipped; use :func:`scan` to see them."""
    return [r for r in scan(root, kind, max_depth)[0]]


def scan(root: str | os.PathLike, kind: str | None = None, max_depth: int = 4) -> tuple[list[Run], list[str]]:
    """Like :func:`find_runs`, also returning a message for every folder whose record could not be read.

    Only what lies inside ``root`` is read: a record that is a link leading outside, or a linked folder leading
    outside, is not read and gets a message (links to folders inside ``root`` are skipped silently: the folder
    itself is scanned where it is).
    """
    root = Path(root)
    runs: list[Run] = []
    problems: list[str] = []
    if not root.is_dir():
        raise ResultError(f"results folder {root} does not exist")
    kinds = [kind] if kind else list(RECORD_FILES)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
        for d in dirnames:
            sub = Path(dirpath) / d
            if sub.is_symlink():  # os.walk does not follow it; say so when it leads out of the results folder
                try:
                    checked_path(root, sub)
                except ResultError as exc:
                    problems.append(f"{exc}; the linked folder is skipped")
        for k in kinds:
            if RECORD_FILES[k] in filenames:
                try:
                    runs.append(Run(k, Path(dirpath), read_record(dirpath, k, root=root), root=root))
                except ResultError as exc:
                    problems.append(str(exc))
    runs.sort(key=lambda r: str(r.path))
    return runs, problems


def safe_path(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """The real path of ``root / relative``, refusing (:class:`ResultError`) any path that resolves outside
    ``root``: ``..``, absolute paths, and symbolic links (to files or folders) leading out.

    Every file the dashboard and ``erftools report`` read goes through this function (or :func:`checked_path`),
    and so does every path typed by a viewer; a path written inside a result file is never used.
    """
    return checked_path(root, Path(root) / relative, shown=relative)


def checked_path(root: str | os.PathLike, path: str | os.PathLike, shown: str | os.PathLike | None = None) -> Path:
    """The real path of ``path`` (already joined to ``root``, or absolute) when it lies inside ``root``; else
    :class:`ResultError`. The message names ``path`` relative to ``root`` (or ``shown``), never where it leads."""
    root_r = Path(os.path.realpath(root))
    target = Path(os.path.realpath(path))
    if target != root_r and root_r not in target.parents:
        if shown is None:
            try:
                shown = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
            except ValueError:
                shown = Path(path).name
        raise ResultError(f"refusing to read {shown}: it resolves outside the results folder "
                          "(a symbolic link or '..' leading out of it)")
    return target


# ------------------------------------------------------------------------------------------------ showing text
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$&#:@!{}^])")
_MD_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)](\s|$)))")
_MD_WWW = re.compile(r"(www)\.", re.IGNORECASE)


def md_text(value: Any) -> str:
    """``value`` as text that Markdown (GitHub, Streamlit) shows exactly as written, on one line.

    Text from result files (labels, model names, decisions, file names, error messages quoting them) can hold
    Markdown or HTML, e.g. an image whose URL the viewer's browser would fetch. Every character that could start
    Markdown, HTML, math or a Streamlit directive is backslash-escaped (CommonMark shows an escaped ASCII
    punctuation character as itself), link-like ``www.`` is broken the same way, and line breaks become spaces.
    """
    text = " ".join(str(value).splitlines())
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _MD_WWW.sub(r"\1\\.", text)
    m = _MD_LINE_START.match(text)
    if m:  # a list item, a setext underline or an ordered list ("1." / "1)") at the start of a Markdown body
        at = m.end() - 1 if not m.group(2).isdigit() else m.end()
        text = text[:at] + "\\" + text[at:]
    return text


def md_code(value: Any) -> str:
    """``value`` as a Markdown code span (shown literally, in a monospace font), safe whatever it contains."""
    text = " ".join(str(value).splitlines())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plot_text(value: Any) -> str:
    """``value`` for a matplotlib label: dollar signs escaped, so a label is never parsed as mathtext."""
    return str(value).replace("$", r"\$")


def base_record(kind: str, **fields: Any) -> dict:
    """A new record with the common fields; the writer adds its own and sets ``complete`` last."""
    import datetime as _dt

    from ._io import versions

    rec = {"kind": kind, "schema": SCHEMA, "complete": False,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions()}
    rec.update(fields)
    return rec
