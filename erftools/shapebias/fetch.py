"""Download the cue-conflict stimuli and the reference decision files, verified file by file.

Both come from Geirhos et al.'s repository ``rgeirhos/texture-vs-shape`` at a pinned commit. Every file is checked
against a SHA-256 manifest shipped in ``data/shapebias/``; a file whose hash differs is deleted and reported, never
kept. Each file is downloaded to ``<name>.part`` (resumed with an HTTP Range request after an interruption) and
renamed into place only once complete and verified, so re-running the command resumes where it stopped.
"""
from __future__ import annotations

import http.client
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .._download import DownloadError, download
from .._io import ErftoolsError, cache_dir, sha256_file, write_text
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
HINT = ("You may be offline: erftools downloads from raw.githubusercontent.com. Copy the files from a machine that "
        "has them (any folder works with --stimuli), or pass --base-url to use a mirror.")


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


def default_dest(dataset: str) -> Path:
    return cache_dir(dataset)


def plan(dataset: str, base_url: str | None = None) -> list[tuple[str, str, str]]:
    """``[(local relpath, url, sha256)]`` of every file of a dataset."""
    if dataset not in DATASETS:
        raise ErftoolsError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    manifest_name, prefix, renames = DATASETS[dataset]
    base = (base_url or BASE_URL).rstrip("/") + "/"
    entries = read_manifest(data_file("shapebias", manifest_name))
    return [(rel, base + (renames[rel] if rel in renames else prefix + rel), digest)
            for rel, digest in sorted(entries.items())]


def fetch(dataset: str, dest: str | os.PathLike | None = None, *, base_url: str | None = None, workers: int = 8,
          progress: bool = True, timeout: float = 60.0, only: list[str] | None = None) -> FetchReport:
    """Download ``dataset`` (``cue-conflict`` or ``reference-decisions``) into ``dest`` (default: user cache).

    Files already present with the right hash are kept; ``only`` restricts the download to some relpaths. Raises :class:`ErftoolsError` listing the files that could
    not be fetched or did not verify (the others stay in place; running again resumes).
    """
    files = plan(dataset, base_url)
    if only is not None:  # a subset (by local relpath)
        unknown = sorted(set(only) - {rel for rel, _, _ in files})
        if unknown:
            raise ErftoolsError(f"not part of {dataset}: {', '.join(unknown[:5])}")
        files = [f for f in files if f[0] in set(only)]
    dest = Path(dest).expanduser() if dest is not None else default_dest(dataset)
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport(dataset, dest)
    todo = []
    for rel, url, digest in files:
        target = dest / rel
        if target.is_file() and sha256_file(target) == digest:
            report.already_present.append(rel)
            continue
        if target.exists():  # a stale or damaged copy: never trusted, fetched again
            log.warning("%s does not match the published SHA-256; downloading it again", target)
            target.unlink()
        todo.append((rel, url, digest))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), initial=len(files) - len(todo), unit="file", desc=dataset)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {pool.submit(_fetch_one, url, dest / rel, digest, timeout): rel for rel, url, digest in todo}
            for fut in as_completed(futures):
                rel = futures[fut]
                err = fut.result()
                if err:
                    report.failed[rel] = err
                else:
                    report.downloaded.append(rel)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    report.downloaded.sort()
    if report.failed:
        first = sorted(report.failed.items())[:5]
        details = "; ".join(f"{rel}: {msg.rstrip('. ')}" for rel, msg in first)
        more = f" (and {len(report.failed) - len(first)} more)" if len(report.failed) > len(first) else ""
        raise ErftoolsError(
            f"{len(report.failed)} of {len(files)} {dataset} files could not be fetched or verified{more}: {details}. "
            f"The {len(files) - len(report.failed)} verified files are in {dest}; run the command again to resume. "
            + (HINT if base_url is None else ""))
    write_text(dest / "SHA256SUMS", "".join(f"{d}  {rel}\n" for rel, _, d in files))
    log.info("%s: %d files verified in %s (%d downloaded)", dataset, len(files), dest, len(report.downloaded))
    return report


def _fetch_one(url: str, target: Path, digest: str, timeout: float) -> str:
    """Download one file; return an error message ('' on success)."""
    try:
        download(url, target, sha256=digest, timeout=timeout)
    except DownloadError as exc:
        return str(exc)
    except http.client.HTTPException as exc:  # IncompleteRead etc.: the connection broke off mid-file
        return f"the transfer of {url} broke off ({type(exc).__name__}); run the command again to resume"
    except OSError as exc:
        return f"{url}: {exc}"
    return ""
