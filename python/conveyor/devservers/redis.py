"""A local Redis server (Debian's redis-server) on a loopback port.

Persistence, chosen on purpose: append-only file with `appendfsync everysec`
and no RDB snapshots. A crash loses at most about a second of writes, and that
second is recoverable: the relay records the Kafka offset it has written up to
in the same Redis write as the jobs, so a Redis that comes back older also
comes back with an older offset, and the relay re-reads the lost jobs from
Kafka. Snapshots are off because forking a large Redis for them doubles its
memory at the worst moment.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from conveyor.devservers.process import ServerProcess, require_free_port, require_program


@dataclass(frozen=True)
class RedisServer:
    """One redis-server on 127.0.0.1:`port`, its files under `home`."""

    port: int
    home: Path
    #: `maxmemory` in bytes; 0 means no limit. Tests of a full Redis set it.
    maxmemory: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _process(self) -> ServerProcess:
        return ServerProcess(
            "redis",
            self.home / "redis.pid",
            self.home / "redis.log",
            # redis-server retitles itself "redis-server 127.0.0.1:<port>" once up.
            markers=[str(self.home / "redis.conf"), f"127.0.0.1:{self.port}"],
        )

    def _config(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {self.home / 'data'}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            # Conveyor's protection depends on refusals, never silent eviction.
            "maxmemory-policy noeviction",
            f"maxmemory {self.maxmemory}",
        ]
        return "\n".join(lines) + "\n"

    def up(self, timeout_s: float = 30.0) -> bool:
        """Start the server unless it runs; wait until it answers PING.
        Returns whether it was started."""
        proc = self._process()
        if proc.pid() is not None:
            proc.wait_ready(self.ping, timeout_s)
            return False
        require_free_port(self.port, "Redis")
        server = require_program("redis-server", "redis-server", "to run the local Redis")
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis.conf"
        conf.write_text(self._config())
        proc.start([server, str(conf)], cwd=self.home)
        proc.wait_ready(self.ping, timeout_s)
        return True

    def ping(self) -> bool:
        """True when the server answers PING with PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def down(self) -> bool:
        """Stop the server; returns whether it was running."""
        return self._process().stop()

    def pid(self) -> int | None:
        """The server's pid, or None when not running."""
        return self._process().pid()
