"""The downloader against a local HTTP server on 127.0.0.1: verification, corruption, interruption, resume."""
from __future__ import annotations

import shutil

import pytest

from erftools._io import ErftoolsError, sha256_file
from erftools.cli import main as cli_main
import erftools.shapebias.fetch as fetch_mod
from erftools.shapebias.fetch import fetch

from ..loopback import LoopbackServer

PREFIX = "/stimuli/style-transfer-preprocessed-512/"
FILES = ["LICENSE", "cat/cat1-airplane1.png", "cat/cat1-cat3.png", "dog/dog1-bird1.png", "dog/dog4-bottle2.png"]


def _route(path: str) -> str | None:
    """The texture-vs-shape layout: stimuli under PREFIX, the dataset licence at /DATASET_LICENSE."""
    if path == "/DATASET_LICENSE":
        return "LICENSE"
    return path[len(PREFIX):] if path.startswith(PREFIX) else None


@pytest.fixture
def mirror(cue_conflict, tmp_path):
    root = tmp_path / "served"
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cue_conflict / rel, root / rel)
    m = LoopbackServer(root, _route).start()
    m.url_root = m.url + "/"
    yield m
    m.stop()


def _expected(cue_conflict, rel):
    return sha256_file(cue_conflict / rel)


def test_fetch_verifies_and_skips_present_files(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    rep = fetch("cue-conflict", dest, base_url=mirror.url_root, only=FILES, progress=False, workers=2)
    assert rep.ok and sorted(rep.downloaded) == sorted(FILES)
    for rel in FILES:
        assert sha256_file(dest / rel) == _expected(cue_conflict, rel)
    assert not list(dest.rglob("*.part"))
    assert (dest / "SHA256SUMS").read_text().count("\n") == len(FILES)
    n = len(mirror.requests)
    rep = fetch("cue-conflict", dest, base_url=mirror.url_root, only=FILES, progress=False)
    assert sorted(rep.already_present) == sorted(FILES) and not rep.downloaded
    assert len(mirror.requests) == n  # nothing downloaded again
    # a local file changed on disk is downloaded again, not trusted
    (dest / FILES[1]).write_bytes(b"tampered")
    rep = fetch("cue-conflict", dest, base_url=mirror.url_root, only=FILES, progress=False)
    assert rep.downloaded == [FILES[1]]
    assert sha256_file(dest / FILES[1]) == _expected(cue_conflict, FILES[1])


def test_corrupted_file_is_refused(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    bad = "dog/dog1-bird1.png"
    mirror.corrupt.add(bad)
    with pytest.raises(ErftoolsError) as exc:
        fetch("cue-conflict", dest, base_url=mirror.url_root, only=FILES, progress=False)
    msg = str(exc.value)
    assert "1 of 5" in msg and bad in msg and "SHA-256" in msg
    assert not (dest / bad).exists() and not (dest / (bad + ".part")).exists()  # never kept
    assert all((dest / rel).is_file() for rel in FILES if rel != bad)
    assert not (dest / "SHA256SUMS").exists()  # only written for a verified set
    mirror.corrupt.clear()
    rep = fetch("cue-conflict", dest, base_url=mirror.url_root, only=FILES, progress=False)
    assert rep.downloaded == [bad] and sha256_file(dest / bad) == _expected(cue_conflict, bad)


def test_interrupted_transfer_then_resume(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    rel = "cat/cat1-cat3.png"
    mirror.break_off[rel] = None
    with pytest.raises(ErftoolsError, match="run the command again to resume"):
        fetch("cue-conflict", dest, base_url=mirror.url_root, only=FILES, progress=False, workers=1)
    assert not (dest / rel).exists()  # a half file never takes the final name
    rep = fetch("cue-conflict", dest, base_url=mirror.url_root, only=FILES, progress=False)
    assert rep.downloaded == [rel] and sha256_file(dest / rel) == _expected(cue_conflict, rel)


def test_partial_file_resumes_with_range_request(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    rel = "dog/dog4-bottle2.png"
    data = (cue_conflict / rel).read_bytes()
    (dest / rel).parent.mkdir(parents=True)
    (dest / (rel + ".part")).write_bytes(data[:1000])  # what an interrupted earlier run left behind
    rep = fetch("cue-conflict", dest, base_url=mirror.url_root, only=[rel], progress=False)
    assert rep.downloaded == [rel]
    assert (rel, "bytes=1000-") in mirror.requests
    assert (dest / rel).read_bytes() == data and not (dest / (rel + ".part")).exists()


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(ErftoolsError, match="cannot reach .*no cue-conflict file was downloaded"):
        fetch("cue-conflict", tmp_path / "d", base_url="http://127.0.0.1:9/", only=["LICENSE"], progress=False)


def test_cli_fetch_reference_decisions(reference_dir, tmp_path, monkeypatch, capsys):
    """`erftools data fetch reference-decisions` against a mirror of raw-data/ (two files)."""
    served = tmp_path / "served" / "raw-data"
    rels = [r for r in fetch_mod.plan("reference-decisions") if "resnet50" in r[0] or "subject-01" in r[0]]
    assert len(rels) == 2
    for rel, _, _ in rels:
        (served / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(reference_dir / rel, served / rel)

    server = LoopbackServer(tmp_path / "served").start()
    orig = fetch_mod.plan
    monkeypatch.setattr(fetch_mod, "plan", lambda ds, base=None: [p for p in orig(ds, base)
                                                                   if p[0] in {r[0] for r in rels}])
    try:
        dest = tmp_path / "refs"
        url = server.url + "/"
        assert cli_main(["data", "fetch", "reference-decisions", "--dest", str(dest), "--base-url", url,
                         "--no-progress"]) == 0
        assert "2 files verified" in capsys.readouterr().out
        for rel, _, digest in rels:
            assert sha256_file(dest / rel) == digest
    finally:
        server.stop()


# ---- offline, non-http base URLs, local mirrors (issue 9) --------------------------------------------------------
def _closed_port() -> str:
    import socket

    with socket.socket() as s:  # bind, read the port, close: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_unreachable_server_fails_fast_with_one_message(tmp_path, monkeypatch, capsys):
    calls = []
    real = fetch_mod._fetch_one
    monkeypatch.setattr(fetch_mod, "_fetch_one", lambda *a: (calls.append(a[0]), real(*a))[1])
    base = _closed_port()
    with pytest.raises(ErftoolsError) as err:
        fetch("cue-conflict", tmp_path / "d", base_url=base, progress=False, workers=8)
    msg = str(err.value)
    assert "cannot reach" in msg and "no cue-conflict file was downloaded" in msg and "1281 missing" in msg
    assert len(calls) == 1  # the first file alone: no second attempt once it could not connect
    # through the CLI with the default server: one message, the hint exactly once
    monkeypatch.setattr(fetch_mod, "BASE_URL", base)
    assert cli_main(["data", "fetch", "cue-conflict", "--dest", str(tmp_path / "e"), "--no-progress"]) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("You may be offline") == 1 and err_text.count("cannot reach") == 1
    assert "--mirror DIR" in err_text and "--stimuli DIR" in err_text


def test_base_url_must_be_http(tmp_path, capsys):
    for bad in ("file:///etc/", "ftp://example.org/x/", "/etc/"):
        with pytest.raises(ErftoolsError, match="not an http:// or https:// address.*mirror=DIR"):
            fetch("cue-conflict", tmp_path / "d", base_url=bad, progress=False)
    assert cli_main(["data", "fetch", "cue-conflict", "--base-url", "file:///etc/", "--dest", str(tmp_path / "d")]) == 1
    assert "pass its folder as --mirror DIR" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_local_mirror_folder_is_copied_and_verified(cue_conflict, tmp_path, capsys):
    # the data set's own layout (a copy of the stimuli folder)
    rep = fetch("cue-conflict", tmp_path / "a", mirror=cue_conflict, only=FILES, progress=False)
    assert sorted(rep.downloaded) == sorted(FILES)
    for rel in FILES:
        assert sha256_file(tmp_path / "a" / rel) == _expected(cue_conflict, rel)
    # the repository's layout, with one damaged file: refused, the others in place
    repo = tmp_path / "repo"
    for rel in FILES:
        target = repo / ("DATASET_LICENSE" if rel == "LICENSE" else PREFIX.strip("/") + "/" + rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cue_conflict / rel, target)
    (repo / PREFIX.strip("/") / FILES[2]).write_bytes(b"damaged")
    with pytest.raises(ErftoolsError) as err:
        fetch("cue-conflict", tmp_path / "b", mirror=repo, only=FILES, progress=False)
    assert f"{FILES[2]}:" in str(err.value) and "expected" in str(err.value)
    assert "You may be offline" not in str(err.value)
    assert not (tmp_path / "b" / FILES[2]).exists() and (tmp_path / "b" / FILES[1]).is_file()
    # the CLI option reaches it: the other 1276 stimuli are reported as not in the mirror
    assert cli_main(["data", "fetch", "cue-conflict", "--dest", str(tmp_path / "b"), "--mirror", str(repo),
                     "--no-progress"]) == 1
    assert "not in the mirror folder" in capsys.readouterr().err
