"""An exclusive lock on a run folder while a run writes it.

The lock is ``FOLDER/.erftools.lock``: a file that the holder keeps ``flock``-ed for as long as it runs and that
names it (pid, host, start time, command). The kernel drops a ``flock`` when its process dies, however it dies,
so a lock that can be taken although the file names a holder belonged to a dead process: it is taken over with a
warning. A live holder makes a second run fail at once with a message that names it. On release the file is
removed. Acquiring the lock also removes the temporary files (``.*.tmp``) that a killed run may have left in the
folder: nobody else can be writing them then.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from ._io import ErftoolsError

log = logging.getLogger(__name__)

LOCK_NAME = ".erftools.lock"

__all__ = ["LOCK_NAME", "FolderLockedError", "run_lock", "lock_holder", "remove_stale_temporaries"]


class FolderLockedError(ErftoolsError):
    """Another live run holds the folder."""


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    cmd = holder.get("command")
    return (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} (started {when}"
            + (f": {cmd}" if cmd else "") + ")")


def read_holder(fd: int) -> dict | None:
    """The holder a lock file names (its open descriptor ``fd``), or None when it is empty or unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        return json.loads(data.decode("utf-8")) if data.strip() else None
    except (OSError, ValueError):
        return None


def write_holder(fd: int, holder: dict) -> None:
    """Name ``holder`` in the lock file open as ``fd`` (replacing what it said)."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode("utf-8"))


def lock_holder(folder: str | os.PathLike) -> dict | None:
    """The live holder of ``folder``'s lock (``{pid, host, started, command}``), or None when nobody holds it."""
    import fcntl

    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # taken: nobody holds it (closing the file drops it again)
        return None
    except OSError:
        return read_holder(fd) or {}
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the ``.NAME.XXXX.tmp`` files of :func:`erftools._io.atomic_path` left by a killed run."""
    removed = []
    for sub in (folder, *[p for p in folder.iterdir() if p.is_dir() and p.name.startswith(".")]):
        for f in sub.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                f.unlink()
                removed.append(f)
    return removed


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, *, what: str = "run") -> Iterator[dict]:
    """Hold ``folder``'s lock for the duration of the block; raise :class:`FolderLockedError` when it is taken."""
    import fcntl

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ErftoolsError(f"cannot create the output folder {folder} ({exc.strerror or exc})") from exc
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
          "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ErftoolsError(f"cannot lock {path} ({exc.strerror or exc})") from exc
            raise FolderLockedError(
                f"{folder} is being written by {describe_holder(holder)}; wait for it to finish, or choose another "
                f"output folder") from None
        # the file may have been removed (released) between open and flock: then lock the new one
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)
    try:
        old = read_holder(fd)
        if old and old.get("host") not in (None, me["host"]):
            log.warning("%s names a holder on another host (%s); its lock is not held here, so it is taken "
                        "over. Two hosts must not write one folder at the same time.", path, describe_holder(old))
        elif old:
            log.warning("taking over the lock of %s, left by %s, which is no longer running", folder,
                        describe_holder(old))
        write_holder(fd, me)
        os.fsync(fd)
        if removed := remove_stale_temporaries(folder):
            log.warning("removed %d temporary file(s) left by an interrupted %s in %s", len(removed), what, folder)
        yield me
    finally:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.unlink(path)
        os.close(fd)
