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
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conveyor.devservers.process import ServerProcess, require_free_port, require_program
from conveyor.errors import DevServerError


@dataclass(frozen=True)
class RedisTls:
    """Certificates for a Redis that speaks only TLS (PEM files)."""

    ca: Path
    cert: Path
    key: Path
    #: Require a client certificate signed by `ca`.
    client_certs: bool = False


@dataclass(frozen=True)
class RedisServer:
    """One redis-server on 127.0.0.1:`port`, its files under `home`."""

    port: int
    home: Path
    #: `maxmemory` in bytes; 0 means no limit. Tests of a full Redis set it.
    maxmemory: int = 0
    #: Run as a node of a Redis Cluster (see `RedisCluster`).
    cluster: bool = False
    #: Speak only TLS on `port`, with these certificates.
    tls: RedisTls | None = None

    @property
    def bus_port(self) -> int:
        """The cluster bus port. Redis's default, port + 10000, lands test
        ports (27101 -> 37101) inside Linux's ephemeral range (32768-60999),
        where any outgoing connection may already hold it; port + 1000 does not."""
        return self.port + 1000

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ca_file={self.tls.ca}"
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
            f"port {0 if self.tls else self.port}",
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
        if self.tls:
            lines += [
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls.cert}",
                f"tls-key-file {self.tls.key}",
                f"tls-ca-cert-file {self.tls.ca}",
                f"tls-auth-clients {'yes' if self.tls.client_certs else 'no'}",
            ]
        if self.cluster:
            # Over TLS the bus speaks TLS too and nodes announce their TLS port.
            lines += ["tls-cluster yes"] if self.tls else []
            lines += [
                "cluster-enabled yes",
                f"cluster-config-file {self.home / 'data' / 'nodes.conf'}",
                "cluster-node-timeout 5000",
                f"cluster-port {self.bus_port}",
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
        if self.cluster:
            require_free_port(self.bus_port, "Redis's cluster bus")
        server = require_program("redis-server", "redis-server", "to run the local Redis")
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis.conf"
        conf.write_text(self._config())
        proc.start([server, str(conf)], cwd=self.home)
        proc.wait_ready(self.ping, timeout_s)
        return True

    def ping(self) -> bool:
        """True when the server answers PING with PONG."""
        return self.ask(b"PING").startswith(b"+PONG")

    def ask(self, command: bytes) -> bytes:
        """The start of the server's reply to an inline `command`; b"" when
        it cannot be reached."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as raw:
                sock = raw
                if self.tls:
                    context = ssl.create_default_context(cafile=str(self.tls.ca))
                    if self.tls.client_certs:
                        context.load_cert_chain(self.tls.cert, self.tls.key)
                    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
                sock.sendall(command + b"\r\n")
                return sock.recv(4096)
        except OSError:
            return b""

    def down(self) -> bool:
        """Stop the server; returns whether it was running."""
        return self._process().stop()

    def pid(self) -> int | None:
        """The server's pid, or None when not running."""
        return self._process().pid()


@dataclass(frozen=True)
class RedisCluster:
    """A Redis Cluster of `len(ports)` primaries (no replicas) on loopback,
    each node's files under `home/node-<port>`; slots are spread evenly."""

    ports: tuple[int, ...]
    home: Path
    #: Every node speaks only TLS, on its port and on the cluster bus.
    tls: RedisTls | None = None

    @property
    def nodes(self) -> list[RedisServer]:
        return [
            RedisServer(port=p, home=self.home / f"node-{p}", cluster=True, tls=self.tls)
            for p in self.ports
        ]

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        if self.tls:
            return f"rediss+cluster://{nodes}?ca_file={self.tls.ca}"
        return f"redis+cluster://{nodes}"

    def healthy(self) -> bool:
        """Every node says the cluster is up (all slots served)."""
        return all(b"cluster_state:ok" in node.ask(b"CLUSTER INFO") for node in self.nodes)

    def up(self, timeout_s: float = 60.0) -> bool:
        """Start the nodes unless they run, join them into one cluster the
        first time, and wait until every slot is served. Returns whether
        anything was started."""
        started = [node.up(timeout_s) for node in self.nodes]
        if not self.healthy() and all(
            b"cluster_known_nodes:1\r" in node.ask(b"CLUSTER INFO") for node in self.nodes
        ):
            cli = require_program("redis-cli", "redis-tools", "to create the local Redis Cluster")
            addresses = [f"127.0.0.1:{p}" for p in self.ports]
            tls = []
            if self.tls:
                tls = ["--tls", "--cacert", str(self.tls.ca)]
                tls += ["--cert", str(self.tls.cert), "--key", str(self.tls.key)]
            done = subprocess.run(
                [
                    cli,
                    *tls,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            if done.returncode != 0:
                raise DevServerError(
                    f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}"
                )
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if time.monotonic() > deadline:
                raise DevServerError(f"Redis Cluster on ports {self.ports} did not come up")
            time.sleep(0.2)
        return any(started)

    def down(self) -> bool:
        """Stop every node; returns whether any was running."""
        return any([node.down() for node in self.nodes])
