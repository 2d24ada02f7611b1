"""The downloader against a local HTTP server on 127.0.0.1: verification, corruption, interruption, resume."""
from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from erftools._io import ErftoolsError, sha256_file
from erftools.cli import main as cli_main
import erftools.shapebias.fetch as fetch_mod
from erftools.shapebias.fetch import fetch

PREFIX = "/stimuli/style-transfer-preprocessed-512/"
FILES = ["LICENSE", "cat/cat1-airplane1.png", "cat/cat1-cat3.png", "dog/dog1-bird1.png", "dog/dog4-bottle2.png"]


class Mirror:
    """A tiny HTTP mirror of the texture-vs-shape layout with Range support and injectable faults."""

    def __init__(self, root: Path):
        self.root = root
        self.corrupt: set[str] = set()  # serve flipped bytes for these relpaths
        self.break_off: set[str] = set()  # send half of the body, then close (once per entry)
        self.requests: list[tuple[str, str | None]] = []  # (relpath, Range header)
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                path = self.path
                rel = path[len(PREFIX):] if path.startswith(PREFIX) else None
                if path == "/DATASET_LICENSE":
                    rel = "LICENSE"
                mirror.requests.append((rel, self.headers.get("Range")))
                file = mirror.root / rel if rel else None
                if file is None or not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                if rel in mirror.corrupt:
                    data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if rel in mirror.break_off:
                    mirror.break_off.discard(rel)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def mirror(cue_conflict, tmp_path):
    root = tmp_path / "served"
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cue_conflict / rel, root / rel)
    m = Mirror(root)
    m.thread.start()
    yield m
    m.server.shutdown()
    m.server.server_close()


def _expected(cue_conflict, rel):
    return sha256_file(cue_conflict / rel)


def test_fetch_verifies_and_skips_present_files(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    rep = fetch("cue-conflict", dest, base_url=mirror.url, only=FILES, progress=False, workers=2)
    assert rep.ok and sorted(rep.downloaded) == sorted(FILES)
    for rel in FILES:
        assert sha256_file(dest / rel) == _expected(cue_conflict, rel)
    assert not list(dest.rglob("*.part"))
    assert (dest / "SHA256SUMS").read_text().count("\n") == len(FILES)
    n = len(mirror.requests)
    rep = fetch("cue-conflict", dest, base_url=mirror.url, only=FILES, progress=False)
    assert sorted(rep.already_present) == sorted(FILES) and not rep.downloaded
    assert len(mirror.requests) == n  # nothing downloaded again
    # a local file changed on disk is downloaded again, not trusted
    (dest / FILES[1]).write_bytes(b"tampered")
    rep = fetch("cue-conflict", dest, base_url=mirror.url, only=FILES, progress=False)
    assert rep.downloaded == [FILES[1]]
    assert sha256_file(dest / FILES[1]) == _expected(cue_conflict, FILES[1])


def test_corrupted_file_is_refused(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    bad = "dog/dog1-bird1.png"
    mirror.corrupt.add(bad)
    with pytest.raises(ErftoolsError) as exc:
        fetch("cue-conflict", dest, base_url=mirror.url, only=FILES, progress=False)
    msg = str(exc.value)
    assert "1 of 5" in msg and bad in msg and "SHA-256" in msg
    assert not (dest / bad).exists() and not (dest / (bad + ".part")).exists()  # never kept
    assert all((dest / rel).is_file() for rel in FILES if rel != bad)
    assert not (dest / "SHA256SUMS").exists()  # only written for a verified set
    mirror.corrupt.clear()
    rep = fetch("cue-conflict", dest, base_url=mirror.url, only=FILES, progress=False)
    assert rep.downloaded == [bad] and sha256_file(dest / bad) == _expected(cue_conflict, bad)


def test_interrupted_transfer_then_resume(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    rel = "cat/cat1-cat3.png"
    mirror.break_off.add(rel)
    with pytest.raises(ErftoolsError, match="run the command again to resume"):
        fetch("cue-conflict", dest, base_url=mirror.url, only=FILES, progress=False, workers=1)
    assert not (dest / rel).exists()  # a half file never takes the final name
    rep = fetch("cue-conflict", dest, base_url=mirror.url, only=FILES, progress=False)
    assert rep.downloaded == [rel] and sha256_file(dest / rel) == _expected(cue_conflict, rel)


def test_partial_file_resumes_with_range_request(mirror, cue_conflict, tmp_path):
    dest = tmp_path / "dest"
    rel = "dog/dog4-bottle2.png"
    data = (cue_conflict / rel).read_bytes()
    (dest / rel).parent.mkdir(parents=True)
    (dest / (rel + ".part")).write_bytes(data[:1000])  # what an interrupted earlier run left behind
    rep = fetch("cue-conflict", dest, base_url=mirror.url, only=[rel], progress=False)
    assert rep.downloaded == [rel]
    assert (rel, "bytes=1000-") in mirror.requests
    assert (dest / rel).read_bytes() == data and not (dest / (rel + ".part")).exists()


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(ErftoolsError, match="could not be fetched"):
        fetch("cue-conflict", tmp_path / "d", base_url="http://127.0.0.1:9/", only=["LICENSE"], progress=False)


def test_cli_fetch_reference_decisions(reference_dir, tmp_path, monkeypatch, capsys):
    """`erftools data fetch reference-decisions` against a mirror of raw-data/ (two files)."""
    served = tmp_path / "served" / "raw-data"
    rels = [r for r in fetch_mod.plan("reference-decisions") if "resnet50" in r[0] or "subject-01" in r[0]]
    assert len(rels) == 2
    for rel, _, _ in rels:
        (served / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(reference_dir / rel, served / rel)

    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    orig = fetch_mod.plan
    monkeypatch.setattr(fetch_mod, "plan", lambda ds, base=None: [p for p in orig(ds, base)
                                                                   if p[0] in {r[0] for r in rels}])
    try:
        dest = tmp_path / "refs"
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        assert cli_main(["data", "fetch", "reference-decisions", "--dest", str(dest), "--base-url", url,
                         "--no-progress"]) == 0
        assert "2 files verified" in capsys.readouterr().out
        for rel, _, digest in rels:
            assert sha256_file(dest / rel) == digest
    finally:
        server.shutdown()
        server.server_close()
