"""A tiny HTTP file server on 127.0.0.1 for download tests: Range requests, 404s, corrupted files and transfers
that break off mid-file. Shared by every download test (weights, cue-conflict stimuli, reference decisions)."""
from __future__ import annotations

import contextlib
import http.server
import threading
from pathlib import Path
from typing import Callable


class LoopbackServer:
    """Serves files below ``root``. ``route`` maps a URL path to a relative file name (None: 404).

    Faults, settable at any time: ``corrupt`` (names served with flipped bytes), ``break_off`` (name -> bytes to send
    before dropping the connection, once; None = half the body). ``requests`` logs (name, Range header).
    """

    def __init__(self, root: Path, route: Callable[[str], str | None] | None = None):
        self.root = Path(root)
        self.route = route or (lambda path: path.lstrip("/").split("?")[0])
        self.corrupt: set[str] = set()
        self.break_off: dict[str, int | None] = {}
        self.requests: list[tuple[str | None, str | None]] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _body(self, name: str) -> bytes | None:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            return None
        data = path.read_bytes()
        if name in self.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        return data

    def _handler(self):
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                name = srv.route(self.path)
                rng = self.headers.get("Range")
                srv.requests.append((name, rng))
                data = srv._body(name) if name else None
                if data is None:
                    self.send_error(404, "not found")
                    return
                start = int(rng[6:].split("-")[0]) if rng and rng.startswith("bytes=") else 0
                if start >= len(data) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if name in srv.break_off:
                    cut = srv.break_off.pop(name)
                    self.wfile.write(body[: len(body) // 2 if cut is None else cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


@contextlib.contextmanager
def serve(root: Path, break_after: dict | None = None):
    """Serve ``root`` on a free port of 127.0.0.1; yields (base_url, request_log)."""
    server = LoopbackServer(root)
    server.break_off.update(break_after or {})
    server.start()
    try:
        yield server.url, server.requests
    finally:
        server.stop()
