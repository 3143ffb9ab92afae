"""A `/metrics` endpoint for Prometheus and a `/healthz` one for
orchestrators, for `conveyor relay` and `conveyor worker` (`--metrics-bind
HOST:PORT`). Scrapes are rare and small, so the standard library's threaded
server is enough; the numbers are rendered by the Rust core. `/healthz`
answers 200 `ok` while every thread of the component runs, 503 with what
stopped otherwise (a liveness probe: restart the process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conveyor.errors import ConfigError


def serve_metrics(
    bind: str, render: Callable[[], str], health: Callable[[], str | None] | None = None
) -> ThreadingHTTPServer:
    """Serves `render()` at `http://bind/metrics` and `health()` (None when
    healthy, else what is wrong; always healthy without one) at `/healthz`,
    on a daemon thread; returns
    the server (its `server_address` has the port when 0 was asked for)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--metrics-bind takes HOST:PORT, not {bind!r}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                wrong = health() if health is not None else None
                status, body = (200, b"ok\n") if wrong is None else (503, f"{wrong}\n".encode())
                content_type = "text/plain"
            elif self.path == "/metrics":
                status, body = 200, render().encode()
                content_type = "text/plain; version=0.0.4"
            else:
                self.send_error(404, "only /metrics and /healthz are served here")
                return
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not news

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="conveyor-metrics", daemon=True).start()
    return server
