"""A `/metrics` endpoint for Prometheus, for `conveyor relay` and `conveyor
worker` (`--metrics-bind HOST:PORT`). Scrapes are rare and small, so the
standard library's threaded server is enough; the numbers are rendered by the
Rust core."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conveyor.errors import ConfigError


def serve_metrics(bind: str, render: Callable[[], str]) -> ThreadingHTTPServer:
    """Serves `render()` at `http://bind/metrics` on a daemon thread; returns
    the server (its `server_address` has the port when 0 was asked for)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--metrics-bind takes HOST:PORT, not {bind!r}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not news

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="conveyor-metrics", daemon=True).start()
    return server
