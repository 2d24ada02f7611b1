"""Downloads with resume, hash verification and atomic placement.

A download goes to ``<dest>.part`` first. If that file exists (an interrupted transfer), the download resumes with
an HTTP ``Range`` request. Only when the whole file is there and its SHA-256 matches (in full, or the prefix given)
is it renamed to ``dest``; a file whose hash does not match is deleted and reported, never kept.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ._io import ErftoolsError, sha256_file

CHUNK = 1 << 20
#: seconds to wait for a download host's TCP handshake before calling it unreachable (a reachable host answers in
#: well under a second; an offline machine fails at once or waits out this timeout)
REACH_TIMEOUT_S = 2.0
#: the environment variables that send HTTPS through a proxy (then a direct TCP probe tells nothing)
PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class DownloadError(ErftoolsError):
    pass


class HashMismatchError(DownloadError):
    pass


class UnreachableError(DownloadError):
    """The server could not be reached at all (offline, DNS failure, connection refused)."""


def _check_hash(path: Path, url: str, sha256: str | None) -> str:
    digest = sha256_file(path)
    if sha256 and not digest.startswith(sha256.lower()):
        path.unlink(missing_ok=True)
        raise HashMismatchError(
            f"the file downloaded from {url} has SHA-256 {digest[:16]}..., expected {sha256[:16]}...; it was "
            "deleted. The server sent a different or corrupted file: try again later, or download it yourself "
            "and pass the local path.")
    return digest


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, timeout: float = 60.0,
             progress: bool = False, offline_hint: str = "") -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is already there; return ``dest``.

    ``sha256`` may be a full hex digest or a prefix (the OpenMMLab file names carry the first 8 hex digits).
    """
    dest = Path(dest)
    if dest.exists():
        with contextlib.suppress(HashMismatchError):  # a stale or damaged copy: it is deleted, fetch it again
            if sha256:
                _check_hash(dest, url, sha256)
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "erftools"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range not satisfiable: the .part file is already complete (or bogus)
            part.rename(dest)  # checked as a copy already there: kept, or deleted and fetched again
            return download(url, dest, sha256=sha256, timeout=timeout, progress=progress, offline_hint=offline_hint)
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}. {offline_hint}".strip()) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise UnreachableError(
            f"cannot reach {url} ({getattr(exc, 'reason', exc)}). You may be offline. {offline_hint}".strip()) from exc
    with resp:
        if offset and getattr(resp, "status", 200) != 206:  # server ignored the range: start again
            offset = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + offset if total is not None else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, leave=False)
        try:
            with open(part, "ab" if offset else "wb") as fh:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    fh.write(block)
                    if bar is not None:
                        bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"the transfer of {url} broke off after {part.stat().st_size if part.exists() else 0} bytes ({exc}); "
                f"run the command again to resume from {part}") from exc
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(
            f"the transfer of {url} stopped at {size} of {total} bytes; run the command again to resume from {part}")
    os.replace(part, dest)
    _check_hash(dest, url, sha256)
    return dest


def host_of(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    return (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)) if parts.hostname else None


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether ``url``'s host accepts a TCP connection within ``timeout`` seconds (no request is sent)."""
    host = host_of(url)
    if host is None:
        return False
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def hub_endpoint() -> str:
    """The Hugging Face hub's address (``HF_ENDPOINT``, else huggingface_hub's default)."""
    try:
        from huggingface_hub import constants

        return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    except Exception:  # noqa: BLE001 - no huggingface_hub: the default endpoint
        return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def hub_unreachable_reason() -> str | None:
    """Why a hub download cannot start now, or None: ``HF_HUB_OFFLINE`` is set, or (no proxy configured) the hub's
    host refuses a TCP connection within :data:`REACH_TIMEOUT_S`. huggingface_hub itself retries for about a minute
    before failing offline (61 s measured); this answers in seconds. Behind a proxy nothing is probed."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in PROXY_VARS):
        return None
    url = hub_endpoint()
    return None if reachable(url) else f"{(host_of(url) or (url,))[0]} did not answer within {REACH_TIMEOUT_S:g} s"
