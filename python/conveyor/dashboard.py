"""The web dashboard (`conveyor dashboard`): one page and a small JSON API,
served from the standard library's threaded HTTP server.

Every API call needs `Authorization: Bearer <token>` (compared in constant
time); the page itself holds no data and takes the token from its URL's
fragment (`#token=...`), which browsers never send to a server or put in a
log. A read-only dashboard refuses every change with 403. Changes (replay,
delete, pause, resume, throttle) go through the same store calls as the
CLI and enter the control history as made by `dashboard` from the
client's address. Nothing a job carries is trusted by the page: it is set
as text, never as markup, and the page may not be framed.

Throughput and latency over time are sampled by the dashboard process
itself (`series.py`), so they cover the time since it started.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conveyor import _core, lookup, overview
from conveyor._core import Envelope
from conveyor.errors import ConfigError, ConveyorError, InvalidJobError
from conveyor.series import Series
from conveyor.settings import Settings

#: Largest request body accepted (a selection of ids is far smaller).
MAX_BODY = 64 * 1024
#: Most ids in one replay or delete, and most rows in one answer.
MAX_IDS = 1000
#: Most dead letters read to filter them by type and error.
MAX_DEAD_SCAN = 10_000
_PAGE_FILES = {
    "/": ("dashboard.html", "text/html"),
    "/dashboard.js": ("dashboard.js", "text/javascript"),
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BadRequest(Exception):
    """A request the dashboard refuses: its status and the reason shown."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Dashboard:
    """Serves the dashboard for `queues` (None: configured and registry
    queues, re-read at each overview) until `stop`."""

    def __init__(
        self,
        settings: Settings,
        token: str,
        *,
        address: tuple[str, int] = ("127.0.0.1", 8300),
        queues: Sequence[str] | None = None,
        read_only: bool = False,
        sample_every_s: float = 2.0,
        insecure: bool = False,
    ) -> None:
        if not token:
            raise ConfigError("the dashboard needs a token (CONVEYOR_DASHBOARD_TOKEN)")
        if not insecure and not _is_loopback(address[0]):
            # Plain HTTP: the token and every job's data cross the network in
            # the clear, so leaving loopback is a choice made out loud.
            raise ConfigError(
                f"the dashboard serves plain HTTP; to serve {address[0]}, put it behind a "
                "TLS-terminating proxy and pass --insecure (or serve 127.0.0.1)"
            )
        self.settings = settings
        self.read_only = read_only
        self._token = token.encode()
        self._queues = list(queues) if queues else None
        self.series = Series(settings, self.queues, sample_every_s)
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self._server = ThreadingHTTPServer(address, handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """`host:port` it listens on."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def queues(self) -> list[str]:
        """The queues shown."""
        if self._queues is not None:
            return self._queues
        return sorted({*self.settings.queues, *lookup.registry_queues(self.settings)})

    def start(self) -> None:
        """Serves and samples in background threads."""
        self.series.start()
        self._thread.start()

    def stop(self) -> None:
        """Stops serving and sampling."""
        self._server.shutdown()
        self._server.server_close()
        self.series.stop()

    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` header carries the token."""
        scheme, _, given = (header or "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    # The API: each returns the JSON answer or raises BadRequest.

    def get_overview(self, query: dict[str, str]) -> dict[str, Any]:
        names = self.queues()
        view = overview.gather(self.settings, names)
        steering = {}
        for name in names:
            topic = self.settings.topic_for(name)
            controls = dict(self._store(name).relay_controls(self.settings.namespace))
            steering[name] = {
                "paused": f"paused:{topic}" in controls,
                "rate": controls.get(f"rate:{topic}"),
            }
        return {
            **asdict(view),
            "steering": steering,
            "read_only": self.read_only,
            "series": self.series.snapshot(),
        }

    def get_job(self, query: dict[str, str]) -> dict[str, Any]:
        job_id = _required(query, "id")
        found = lookup.find(self.settings, job_id, self.queues(), max_scan=10_000)
        if found is None:
            raise BadRequest(HTTPStatus.NOT_FOUND, f"job {job_id} not found in Redis")
        return asdict(found)

    def get_jobs(self, query: dict[str, str]) -> dict[str, Any]:
        """Jobs of a queue in a state (`queued` or `dead`), filtered by type
        and, for dead ones, by a piece of their error."""
        queue = self._queue(query)
        state = query.get("state", "dead")
        job_type, error = query.get("type", ""), query.get("error", "").lower()
        limit = min(_number(query, "limit", 100), MAX_IDS)
        store = self._store(queue)
        rows: list[dict[str, Any]] = []
        if state == "queued":
            for raw in store.peek_ready(self.settings.namespace, queue, MAX_DEAD_SCAN):
                env = Envelope.decode(raw)
                if not job_type or env.job_type == job_type:
                    rows.append({"id": env.id, "type": env.job_type, "attempts": env.attempt})
        elif state == "dead":
            for raw, at, why in store.dead_letters(self.settings.namespace, queue, MAX_DEAD_SCAN):
                env = Envelope.decode(raw)
                reason = json.loads(why) if why else {}
                text = f"{reason.get('type', '')}: {reason.get('message', '')}"
                if (job_type and env.job_type != job_type) or (error and error not in text.lower()):
                    continue
                rows.append(
                    {
                        "id": env.id,
                        "type": env.job_type,
                        "attempts": env.attempt,
                        "dead_at": at,
                        "error": text,
                    }
                )
        else:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "state must be queued or dead")
        return {"queue": queue, "state": state, "jobs": rows[:limit], "matched": len(rows)}

    def post_replay(self, body: dict[str, Any]) -> dict[str, Any]:
        queue, ids = self._queue(body), _ids(body)
        moved, kept = self._store(queue).replay_dead_ids(self.settings.namespace, queue, ids)
        return {"moved": moved, "kept": kept}

    def post_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        queue, ids = self._queue(body), _ids(body)
        return {"deleted": self._store(queue).forget_dead_ids(self.settings.namespace, queue, ids)}

    def post_control(self, body: dict[str, Any], client: str) -> dict[str, Any]:
        """Pauses, resumes or throttles a queue's relaying, as the CLI does."""
        queue, action = self._queue(body), body.get("action")
        topic = self.settings.topic_for(queue)
        store = self._store(queue)
        by = {"who": "dashboard", "origin": client}
        ns = self.settings.namespace
        if action in ("pause", "resume"):
            store.set_relay_control(ns, "paused", topic, "1" if action == "pause" else None, **by)
        elif action == "throttle":
            rate = str(body.get("rate", ""))
            if rate in ("", "off", "0"):
                store.set_relay_control(ns, "rate", topic, None, **by)
            else:
                try:
                    _core.check_relay_control(f"rate:{topic}", rate)
                except InvalidJobError:
                    raise BadRequest(
                        HTTPStatus.BAD_REQUEST, f"rate must be jobs/s or off, not {rate!r}"
                    ) from None
                store.set_relay_control(ns, "rate", topic, rate, **by)
        else:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "action must be pause, resume or throttle")
        return {"queue": queue, "action": action}

    def _queue(self, given: dict[str, Any]) -> str:
        queue = given.get("queue")
        if not isinstance(queue, str) or queue not in self.queues():
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"unknown queue {queue!r}")
        return queue

    def _store(self, queue: str) -> _core.RedisStore:
        return _core.RedisStore(self.settings.redis_url_for(queue))


def _required(query: dict[str, str], name: str) -> str:
    if not query.get(name):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{name} is required")
    return query[name]


def _number(query: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(query.get(name, default))
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{name} must be a whole number") from None
    if value < 1:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{name} must be at least 1")
    return value


def _ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "ids must be a list of job ids")
    if len(ids) > MAX_IDS:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"at most {MAX_IDS} ids at a time")
    return ids


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "conveyor-dashboard"
    sys_version = ""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in _PAGE_FILES:
            name, kind = _PAGE_FILES[url.path]
            page = resources.files("conveyor").joinpath(name).read_bytes()
            self._send(HTTPStatus.OK, page, kind)
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        d = self.dashboard
        routes: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
            "/api/overview": d.get_overview,
            "/api/job": d.get_job,
            "/api/jobs": d.get_jobs,
        }
        self._api(url.path, routes, lambda call: call(query))

    def do_POST(self) -> None:
        d = self.dashboard
        routes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "/api/dead/replay": d.post_replay,
            "/api/dead/delete": d.post_delete,
            "/api/control": lambda body: d.post_control(body, self.client_address[0]),
        }

        def call(route: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
            if d.read_only:
                raise BadRequest(HTTPStatus.FORBIDDEN, "this dashboard is read-only")
            return route(self._body())

        self._api(urlsplit(self.path).path, routes, call)

    def _api(
        self, path: str, routes: dict[str, Any], call: Callable[[Any], dict[str, Any]]
    ) -> None:
        try:
            if path not in routes:
                raise BadRequest(HTTPStatus.NOT_FOUND, f"no such page {path}")
            if not self.dashboard.authorized(self.headers.get("Authorization")):
                raise BadRequest(HTTPStatus.UNAUTHORIZED, "a valid token is required")
            answer = call(routes[path])
        except BadRequest as e:
            answer, status = {"error": e.reason}, e.status
        except InvalidJobError as e:  # a malformed id or queue name
            answer, status = {"error": str(e)}, HTTPStatus.BAD_REQUEST
        except ConveyorError as e:  # Redis or Kafka away, a bad name
            answer, status = {"error": f"{type(e).__name__}: {e}"}, HTTPStatus.SERVICE_UNAVAILABLE
        else:
            status = HTTPStatus.OK
        self._send(status, json.dumps(answer).encode(), "application/json")

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "a bad Content-Length") from None
        if length > MAX_BODY:
            raise BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are at most {MAX_BODY} bytes"
            )
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the token travels in a header, never in a logged line, and
        requests are not logged at all."""
