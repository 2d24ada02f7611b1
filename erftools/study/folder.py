"""A study's results folder: where it may be, whose files it holds, and who is writing it.

* **Where.** A folder named by the study file (``[study] results``) must stay inside the working directory: a
  relative path that neither climbs out with ``..`` nor leaves through a symbolic link. A folder given by the user
  (``--results DIR``, or ``results=`` in Python) may be anywhere the user can write. Either way, a system location
  (``/``, ``/etc``, ``/usr``, ``/var``, ... but not ``/tmp`` or ``/var/tmp``) is refused.
* **Whose.** The study writes into a folder only when the folder is new or empty or holds its study record
  (``study.json`` of kind ``"study"`` with the study's name; or, for a study interrupted before its first record, a
  ``study.toml`` copy of this very file and none of the files a study writes). Anything else is somebody else's
  folder and is refused, whatever the flags: a study never overwrites a file it did not write.
* **Which study.** A folder of the same study written from a different file is refused, naming the keys that
  differ; ``overwrite=True`` (``--overwrite``) takes the new file and computes every run again.
* **Who is writing.** :func:`study_lock` holds ``.erftools-study.lock`` for the whole run: exclusively for a whole
  study, shared for a shard (with ``.erftools-study-shard-I-of-N.lock`` exclusive), so the shards of one study run
  side by side while a second whole study, or a second copy of one shard, is refused naming the holder.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from .._lock import FolderLockedError, describe_holder, read_holder, write_holder
from .spec import Study, StudyError

STUDY_LOCK = ".erftools-study.lock"
SHARD_LOCK = ".erftools-study-shard-{}-of-{}.lock"
#: the files and folders a study writes at the top of its results folder (besides the model folders)
STUDY_FILES = ("study.toml", "study.json", "study.md", "report.md", "figures")
#: system locations a results folder may never be in (nor be)
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
               "/sys", "/usr", "/var", "/System", "/Library", "/private/etc", "/private/var")
#: ... except the temporary folders inside them
TEMP_DIRS = ("/var/tmp", "/var/folders", "/private/var/tmp", "/private/var/folders")

__all__ = ["results_folder", "check_folder", "study_lock", "study_differences", "STUDY_LOCK", "STUDY_FILES",
           "record_name"]


def _system_location(resolved: Path) -> bool:
    if resolved == Path(resolved.anchor):
        return True
    if any(resolved.is_relative_to(t) or resolved.is_relative_to(Path(t).resolve()) for t in TEMP_DIRS):
        return False
    return any(resolved.is_relative_to(d) or resolved.is_relative_to(Path(d).resolve()) for d in SYSTEM_DIRS)


def results_folder(study: Study, results: str | os.PathLike | None = None) -> Path:
    """The study's results folder (the argument, else the study's ``results`` key, else ``results/studies/<name>``),
    checked against the rule of this module; raise :class:`StudyError` naming where the folder came from."""
    from .jobs import DEFAULT_RESULTS

    if results is not None:
        path, origin = Path(results).expanduser(), "the results folder given"
    elif study.results:
        path, origin = Path(study.results).expanduser(), f"{study.source}, key study.results"
        cwd = Path.cwd().resolve()
        if not (cwd / path).resolve().is_relative_to(cwd):
            raise StudyError(f"{origin}: {study.results!r} is outside the working directory {cwd}; a study file may "
                             "only name a results folder inside the working directory (a relative path that does "
                             "not climb out with '..' or leave through a symbolic link). Give a folder elsewhere "
                             "on the command line (results=DIR)")
    else:
        path, origin = DEFAULT_RESULTS / study.name, "the default results folder"
    resolved = (Path.cwd() / path).resolve()
    if _system_location(resolved):
        raise StudyError(f"{origin} ({path}, i.e. {resolved}) is a system location; a study writes a folder of "
                         "results: choose one in your working directory or home (results=DIR)")
    return path


def _entries(root: Path) -> list[str]:
    """The names in ``root`` that are not the study's locks or an interrupted write's temporaries."""
    return sorted(e.name for e in root.iterdir()
                  if not e.name.startswith(".erftools") and not (e.name.startswith(".") and e.name.endswith(".tmp")))


def record_name(root: Path) -> str | None:
    """The name in ``root``'s study record, "" for a record of no study, None when there is none."""
    path = root / "study.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(data.get("name")) if isinstance(data, dict) and data.get("kind") == "study" else ""


def check_folder(root: Path, study: Study, overwrite: bool = False) -> None:
    """Refuse a results folder that another study or somebody else wrote, or that this study wrote from a
    different file (without ``overwrite``). See the module's docstring for the rule."""
    if not root.exists():
        return
    if not root.is_dir():
        raise StudyError(f"the results folder {root} is a file; choose a folder (results=DIR)")
    names = _entries(root)
    if not names:
        return
    name = record_name(root)
    copy = root / "study.toml"
    copy_text = copy.read_text(encoding="utf-8", errors="replace") if copy.is_file() else None
    if name is None and copy_text == study.text and not [n for n in STUDY_FILES[1:] if n in names]:
        return  # this study, interrupted before its first record
    if name is None and copy_text is not None:
        name = _copy_name(copy_text)
        if name == study.name:
            raise StudyError(f"the results folder {root} holds a study.toml of study {study.name} but no study "
                             "record (study.json), and it differs from this file; choose another results folder "
                             "(results=DIR)")
    if not name:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise StudyError(f"the results folder {root} holds files that no study wrote ({shown}); a study never "
                         "writes into such a folder. Choose a new or empty folder (results=DIR)")
    if name != study.name:
        raise StudyError(f"the results folder {root} holds the results of another study ({name!r}); choose another "
                         "results folder (results=DIR)")
    if copy_text is None or copy_text == study.text or overwrite:
        return
    diffs = study_differences(copy_text, study.text)
    if not diffs:
        return  # the same study written differently (comments, order)
    shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    raise StudyError(f"the results folder {root} holds study {study.name} made from a different study file "
                     f"({shown}; the folder's copy is {copy}). Run the file that made it, choose another results "
                     "folder (results=DIR), or pass overwrite=True to replace the folder's study with this file and "
                     "compute every run again")


def _copy_name(text: str) -> str:
    """The study name in a study.toml (an older erftools kept only this copy), "" when it is none."""
    from .spec import parse_study

    try:
        return parse_study(text).name
    except Exception:  # noqa: BLE001 - not a study file of this erftools: somebody else's file
        return ""


# ------------------------------------------------------------------------------------------------ differences
def _flat(value, prefix: str = "") -> dict:
    out: dict = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            key = v.get("id") or v.get("name") or str(i + 1)
            out.update(_flat(v, f"{prefix}[{key}]"))
    else:
        out[prefix] = value
    return out


def study_differences(old_text: str, new_text: str) -> list[str]:
    """The keys whose values differ between two study files, each as ``key: old -> new``."""
    from .spec import _tomllib

    toml = _tomllib()
    try:
        old = _flat(toml.loads(old_text))
    except toml.TOMLDecodeError:
        return ["the folder's study.toml is not valid TOML"]
    new = _flat(toml.loads(new_text))
    absent = "(absent)"
    return [f"{key}: {_short(old.get(key, absent))} -> {_short(new.get(key, absent))}" for key in {**old, **new}
            if old.get(key, absent) != new.get(key, absent)]


def _short(v) -> str:
    text = v if v == "(absent)" else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------------------- lock
def _holders(root: Path, main_fd: int) -> str:
    """Who holds a study's lock: the live shards (each names itself in its shard file), else the whole study."""
    import fcntl

    found = []
    for f in sorted(root.glob(".erftools-study-shard-*.lock")):
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            holder = read_holder(fd) or {}
            found.append(f"shard {holder.get('shard', '?')} ({describe_holder(holder)})")
        finally:
            os.close(fd)
    return ", ".join(found) if found else describe_holder(read_holder(main_fd))


def _take(path: Path, mode: int) -> tuple[int, bool]:
    """A descriptor of ``path``, open, and whether the lock ``mode`` was taken (False: another process holds it)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            os.close(fd)
            raise StudyError(f"cannot lock {path} ({exc.strerror or exc})") from exc
        return fd, False
    return fd, True


@contextlib.contextmanager
def study_lock(root: Path, shard: tuple[int, int] | None = None) -> Iterator[dict]:
    """Hold the study's lock on ``root`` for the block (see the module's docstring); raise
    :class:`erftools._lock.FolderLockedError` naming the holder when a whole study, or this shard, runs already."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
          "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
          "shard": f"{shard[0]}/{shard[1]}" if shard else None}
    main, taken = _take(root / STUDY_LOCK, fcntl.LOCK_SH if shard else fcntl.LOCK_EX)
    if not taken:
        who = _holders(root, main)
        os.close(main)
        raise FolderLockedError(f"the results folder {root} is being written by another erftools study: {who}; "
                                "wait for it to finish, or choose another results folder (results=DIR)")
    fds = [main]
    try:
        if shard:
            fd, taken = _take(root / SHARD_LOCK.format(*shard), fcntl.LOCK_EX)
            if not taken:
                who = describe_holder(read_holder(fd))
                os.close(fd)
                raise FolderLockedError(f"shard {shard[0]}/{shard[1]} of the study in {root} is being run by {who}; "
                                        "wait for it to finish")
            fds.append(fd)
        write_holder(fds[-1], me)
        yield me
        with contextlib.suppress(OSError):
            os.ftruncate(fds[-1], 0)
    finally:
        for fd in reversed(fds):
            os.close(fd)
