"""Download the cue-conflict stimuli and the reference decision files, verified file by file.

Both come from Geirhos et al.'s repository ``rgeirhos/texture-vs-shape`` at a pinned commit. Every file is checked
against a SHA-256 manifest shipped in ``data/shapebias/``; a file whose hash differs is deleted and reported, never
kept. Each file is downloaded to ``<name>.part`` (resumed with an HTTP Range request after an interruption) and
renamed into place only once complete and verified, so re-running the command resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .._download import DownloadError, UnreachableError, download
from .._io import ErftoolsError, atomic_path, cache_dir, sha256_file, write_text
from .._paths import data_file
from .reference import TEXTURE_VS_SHAPE, TEXTURE_VS_SHAPE_COMMIT
from .stimuli import read_manifest

log = logging.getLogger(__name__)

BASE_URL = f"https://raw.githubusercontent.com/{TEXTURE_VS_SHAPE}/{TEXTURE_VS_SHAPE_COMMIT}/"
DATASETS = {
    # name: (manifest in data/shapebias, path prefix in the repository, {local name: repository path})
    "cue-conflict": ("cue-conflict.sha256", "stimuli/style-transfer-preprocessed-512/",
                     {"LICENSE": "DATASET_LICENSE"}),
    "reference-decisions": ("reference-decisions.sha256", "raw-data/", {}),
}
def offline_hint(dataset: str) -> str:
    """What to do without network access, for ``dataset`` (the stimuli and the decision files are used differently)."""
    use = ("any folder of them works as stimuli_dir=DIR" if dataset == "cue-conflict" else
           "`erftools shape-bias --decisions FILE.csv ...` analyses decision files from any folder")
    return ("You may be offline: erftools downloads from raw.githubusercontent.com. Copy the files from a machine "
            f"that has them ({use}; mirror=DIR copies and verifies them from a local folder), or pass base_url=URL "
            "to use an HTTP mirror.")
#: after this many files that could not reach the server (and none that could), the rest are not tried
MAX_UNREACHABLE = 3


@dataclass
class FetchReport:
    dataset: str
    dest: Path
    downloaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def plan(dataset: str, base_url: str | None = None) -> list[tuple[str, str, str]]:
    """``[(local relpath, url, sha256)]`` of every file of a dataset."""
    if dataset not in DATASETS:
        raise ErftoolsError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    manifest_name, prefix, renames = DATASETS[dataset]
    if base_url is not None and urllib.parse.urlsplit(base_url).scheme.lower() not in ("http", "https"):
        raise ErftoolsError(f"the base URL {base_url!r} is not an http:// or https:// address; for a copy on this "
                            "machine pass its folder as mirror=DIR instead")
    base = (base_url or BASE_URL).rstrip("/") + "/"
    entries = read_manifest(data_file("shapebias", manifest_name))
    return [(rel, base + (renames[rel] if rel in renames else prefix + rel), digest)
            for rel, digest in sorted(entries.items())]


def fetch(dataset: str, dest: str | os.PathLike | None = None, *, base_url: str | None = None, workers: int = 8,
          progress: bool = True, timeout: float = 60.0, only: list[str] | None = None,
          mirror: str | os.PathLike | None = None) -> FetchReport:
    """Download ``dataset`` (``cue-conflict`` or ``reference-decisions``) into ``dest`` (default: user cache).

    Files already present with the right hash are kept; ``only`` restricts the download to some relpaths.
    ``base_url``: an http(s) mirror of the repository at the pinned commit. ``mirror``: a folder on this machine
    instead of a server, laid out like the data set (``cat/cat1-airplane1.png``) or like the repository; its files
    are copied and verified like downloads. When the server cannot be reached, the command stops after the first
    few attempts with one message. Raises :class:`ErftoolsError` listing the files that could not be fetched or did
    not verify (the others stay in place; running again resumes).
    """
    if mirror is not None and base_url is not None:
        raise ErftoolsError("pass either a base URL or a local mirror folder, not both")
    files = _selected(plan(dataset, base_url), only, dataset)
    dest = Path(dest).expanduser() if dest is not None else cache_dir(dataset)
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport(dataset, dest)
    todo = _still_to_fetch(files, dest, report)
    fetch_one = _fetcher(dataset, dest, mirror, timeout)
    with _progress(progress and bool(todo), len(files), len(files) - len(todo), dataset) as bar:
        run = _Fetching(report, fetch_one, bar)
        if todo:  # one file alone first: offline, the command fails after one attempt, not after hundreds
            run.record(todo[0][0], *run.one(*todo[0]))
        if todo[1:] and not (run.unreachable and not run.ok):
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                futures = {pool.submit(run.one, *t): t[0] for t in todo[1:]}
                for fut in as_completed(futures):
                    run.record(futures[fut], *fut.result())
    report.downloaded.sort()
    _refuse_missing(run, len(todo), len(files), base_url, mirror)
    write_text(dest / "SHA256SUMS", "".join(f"{d}  {rel}\n" for rel, _, d in files))
    log.info("%s: %d files verified in %s (%d downloaded)", dataset, len(files), dest, len(report.downloaded))
    return report


def _selected(files: list, only: list[str] | None, dataset: str) -> list:
    """``files``, restricted to the local relpaths ``only`` (each must be part of the data set)."""
    if only is None:
        return files
    unknown = sorted(set(only) - {rel for rel, _, _ in files})
    if unknown:
        raise ErftoolsError(f"not part of {dataset}: {', '.join(unknown[:5])}")
    return [f for f in files if f[0] in set(only)]


def _still_to_fetch(files: list, dest: Path, report: FetchReport) -> list:
    """The files not yet in ``dest`` with the right hash (a stale or damaged copy is removed: never trusted)."""
    todo = []
    for rel, url, digest in files:
        target = dest / rel
        if target.is_file() and sha256_file(target) == digest:
            report.already_present.append(rel)
            continue
        if target.exists():
            log.warning("%s does not match the published SHA-256; downloading it again", target)
            target.unlink()
        todo.append((rel, url, digest))
    return todo


def _fetcher(dataset: str, dest: Path, mirror, timeout: float):
    """``fetch(rel, url, digest) -> (kind, message)``: a copy from the local ``mirror``, else a download."""
    if mirror is None:
        return lambda rel, url, digest: _fetch_one(url, dest / rel, digest, timeout)
    mirror = Path(mirror).expanduser()
    if not mirror.is_dir():
        raise ErftoolsError(f"the mirror folder {mirror} does not exist or is not a folder")
    _, prefix, renames = DATASETS[dataset]
    return lambda rel, url, digest: _copy_one(mirror, rel, prefix, renames, dest / rel, digest)


def _progress(progress: bool, total: int, initial: int, desc: str):
    """A progress bar (closed on leaving its ``with``), or for no ``progress`` a context that gives None."""
    if not progress:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="file", desc=desc)


class _Fetching:
    """The state of one fetch: what was downloaded, what failed, which servers were unreachable; after
    :data:`MAX_UNREACHABLE` unreachable attempts without any success the remaining files are not tried."""

    def __init__(self, report: FetchReport, fetch_one, bar):
        self.report, self.fetch_one, self.bar = report, fetch_one, bar
        self.unreachable: dict[str, str] = {}
        self.ok = 0
        self.give_up = threading.Event()

    def one(self, rel, url, digest) -> tuple[str, str]:
        if self.give_up.is_set():
            return "not tried", ""
        kind, msg = self.fetch_one(rel, url, digest)
        if kind == "unreachable" and not self.ok and len(self.unreachable) + 1 >= MAX_UNREACHABLE:
            self.give_up.set()
        return kind, msg

    def record(self, rel: str, kind: str, msg: str) -> None:
        if kind == "ok":
            self.report.downloaded.append(rel)
            self.ok += 1
        elif kind == "unreachable":
            self.unreachable[rel] = msg
        elif kind == "failed":
            self.report.failed[rel] = msg
        if self.bar is not None and kind != "not tried":
            self.bar.update(1)


def _refuse_missing(run: _Fetching, n_todo: int, n_files: int, base_url, mirror) -> None:
    """Raise, naming the files that could not be fetched or verified (the verified ones stay in place)."""
    report = run.report
    dataset, dest = report.dataset, report.dest
    missing = n_todo - len(report.downloaded)
    if run.unreachable and not run.ok:
        rel, msg = next(iter(run.unreachable.items()))
        raise ErftoolsError(f"{msg.rstrip('. ')}; stopped after {len(run.unreachable)} attempt(s), no {dataset} "
                            f"file was downloaded ({missing} missing in {dest}). "
                            + (offline_hint(dataset) if base_url is None else "Check the base URL."))
    report.failed.update(run.unreachable)
    if missing:
        not_tried = missing - len(report.failed)
        first = sorted(report.failed.items())[:5]
        details = "; ".join(f"{rel}: {msg.rstrip('. ')}" for rel, msg in first)
        more = f" (and {len(report.failed) - len(first)} more)" if len(report.failed) > len(first) else ""
        raise ErftoolsError(
            f"{missing} of {n_files} {dataset} files could not be fetched or verified{more}: {details}"
            + (f" ({not_tried} not tried after the server became unreachable)" if not_tried else "")
            + f". The {n_files - missing} verified files are in {dest}; run the command again to resume."
            + (" " + offline_hint(dataset) if base_url is None and mirror is None and run.unreachable else ""))


def _fetch_one(url: str, target: Path, digest: str, timeout: float) -> tuple[str, str]:
    """Download one file; return ``(kind, message)`` with kind ``ok``, ``unreachable`` or ``failed``."""
    try:
        download(url, target, sha256=digest, timeout=timeout)
    except UnreachableError as exc:
        return "unreachable", str(exc).split(". You may be offline")[0]
    except DownloadError as exc:
        return "failed", str(exc)
    except http.client.HTTPException as exc:  # IncompleteRead etc.: the connection broke off mid-file
        return "failed", f"the transfer of {url} broke off ({type(exc).__name__}); run the command again to resume"
    except OSError as exc:
        return "failed", f"{url}: {exc}"
    return "ok", ""


def _copy_one(mirror: Path, rel: str, prefix: str, renames: dict, target: Path, digest: str) -> tuple[str, str]:
    """Copy one file from a local mirror (data-set or repository layout) and verify it."""
    candidates = [mirror / rel, mirror / (renames.get(rel) or (prefix + rel))]
    src = next((c for c in candidates if c.is_file()), None)
    if src is None:
        return "failed", f"not in the mirror folder {mirror} (looked for {candidates[0]} and {candidates[1]})"
    try:
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
            got = sha256_file(tmp)
            if got != digest:
                raise ValueError(got)
    except ValueError as exc:
        return "failed", f"{src} has SHA-256 {str(exc)[:16]}..., expected {digest[:16]}... (not copied)"
    except (OSError, ErftoolsError) as exc:
        return "failed", f"copying {src} failed ({exc})"
    return "ok", ""
