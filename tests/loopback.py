"""A tiny HTTP file server on 127.0.0.1 for download tests: Range requests, 404s, and transfers that break off."""
from __future__ import annotations

import contextlib
import http.server
import threading
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    break_after: dict  # file name -> bytes to send before dropping the connection (once)
    requests: list

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        name = self.path.lstrip("/").split("?")[0]
        self.requests.append((name, self.headers.get("Range")))
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            self.send_error(404, "not found")
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416, "range not satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.break_after.pop(name, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve(root: Path, break_after: dict | None = None):
    """Serve ``root`` on a free port of 127.0.0.1; yields (base_url, request_log)."""
    log: list = []
    handler = type("H", (_Handler,), {"root": Path(root), "break_after": dict(break_after or {}), "requests": log})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
