"""A local Apache Kafka (KRaft mode) assembled from Maven Central jars.

Kafka comes from Maven Central as `org.apache.kafka:kafka_2.13` plus its runtime
dependencies and a logging binding, resolved once by Maven into a cache folder
and reused. Each node is a combined broker and controller on loopback ports;
one node is the dev and test default, and three nodes (distinct ids, ports and
folders) make a cluster for failure tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.devservers.kafka_security import (
    KafkaSecurity,
    broker_lines,
    listeners,
    scram_format_args,
)
from conveyor.devservers.process import ServerProcess, require_free_port, require_program
from conveyor.errors import ConveyorError, DevServerError

#: Pinned Kafka release; the jars are resolved for exactly this version.
KAFKA_VERSION = "4.1.1"
#: Logging: Kafka's code logs through SLF4J; without a binding it logs nothing.
SLF4J_VERSION = "2.0.17"
#: Small heap: plenty for tests and demos on a 2-core, shared machine.
JVM_OPTIONS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]


def _pom(artifact: str) -> str:
    """A POM pulling `org.apache.kafka:<artifact>` and a logging binding."""
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.conveyor</groupId>
  <artifactId>{artifact}-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>{artifact}</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{SLF4J_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>{SLF4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""


def require_java() -> str:
    """Path of a Java 17+ runtime, or a clear error saying how to get one."""
    java = shutil.which("java")
    how = "On Debian or Ubuntu: `sudo apt-get install openjdk-17-jre-headless`."
    if java is None:
        raise DevServerError(f"Java 17 or newer is needed to run the local Kafka. {how}")
    out = subprocess.run([java, "-version"], check=False, capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if match is None or int(match.group(1)) < 17:
        raise DevServerError(f"Kafka 4 needs Java 17 or newer; found: {out.strip()!r}. {how}")
    return java


def ensure_jars(cache: Path) -> Path:
    """Folder of Kafka's runtime jars, fetched with Maven the first time.

    A folder counts as complete only once its marker lists every jar and each
    is still there, so an interrupted fetch is redone rather than trusted.
    """
    return _ensure(cache / f"kafka-{KAFKA_VERSION}", "kafka_2.13")


def ensure_tool_jars(cache: Path) -> Path:
    """Folder of Kafka's command-line tools (`kafka-tools`: the producer and
    consumer performance tools), for benchmarks; kept apart from the server's."""
    return _ensure(cache / f"kafka-tools-{KAFKA_VERSION}", "kafka-tools")


def _ensure(folder: Path, artifact: str) -> Path:
    libs = folder / "libs"
    marker = libs.parent / "complete"
    if marker.exists():
        names = marker.read_text().split()
        if names and all((libs / n).is_file() for n in names):
            return libs
    mvn = require_program("mvn", "maven", "to fetch Kafka's jars from Maven Central")
    print(f"fetching {artifact} {KAFKA_VERSION} jars with Maven (first time only) ...", flush=True)
    work = libs.parent
    shutil.rmtree(libs, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(_pom(artifact))
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        cwd=work,
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise DevServerError(
            f"Maven could not fetch Kafka's jars:\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
        )
    names = sorted(p.name for p in libs.glob("*.jar"))
    if not any(n.startswith(f"{artifact}-{KAFKA_VERSION}") for n in names):
        raise DevServerError(f"Maven finished but {libs} has no {artifact} jar")
    marker.write_text("\n".join(names) + "\n")
    return libs


@dataclass(frozen=True)
class KafkaNode:
    """One combined broker+controller: its id, loopback ports and folder."""

    node_id: int
    port: int
    controller_port: int
    home: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def new_cluster_id(draw: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A cluster id as Kafka wants it: a base64url-encoded UUID, 22 characters,
    never starting with `-` (the storage tool would read one as an option; one
    id in 64 did, and formatting failed)."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(draw()).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaCluster:
    """One or more Kafka nodes on loopback, started and stopped as a unit."""

    def __init__(
        self, nodes: list[KafkaNode], cache: Path, security: KafkaSecurity | None = None
    ) -> None:
        if not nodes:
            raise ValueError("a Kafka cluster needs at least one node")
        self.nodes = nodes
        self.cache = cache
        #: TLS and SASL listeners beside the plaintext one (tests of secured clients).
        self.security = security

    def secured_bootstrap(self, listener: str) -> str:
        """Bootstrap servers of the `SSL` or `SASL_SSL` listener."""
        if self.security is None:
            raise DevServerError("this Kafka has no secured listeners")
        return ",".join(
            f"127.0.0.1:{listeners(self.security, n.port)[listener]}" for n in self.nodes
        )

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers, comma separated."""
        return ",".join(n.bootstrap for n in self.nodes)

    def _process(self, node: KafkaNode) -> ServerProcess:
        return ServerProcess(
            f"kafka node {node.node_id}",
            node.home / "kafka.pid",
            node.home / "kafka.log",
            markers=[str(node.home / "server.properties")],
        )

    def _properties(self, node: KafkaNode) -> str:
        size = len(self.nodes)
        replication = min(3, size)
        min_isr = min(2, size)
        names = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if self.security:
            secured = listeners(self.security, node.port)
            names += [f"{name}://127.0.0.1:{port}" for name, port in secured.items()]
            protocols += "," + ",".join(f"{name}:{name}" for name in secured)
        lines = [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"listeners={','.join(names)},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners={','.join(names)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            f"log.dirs={node.home / 'data'}",
            f"offsets.topic.replication.factor={replication}",
            f"transaction.state.log.replication.factor={replication}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replication}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            f"default.replication.factor={replication}",
            f"min.insync.replicas={min_isr}",
            # Topics are created on purpose, with chosen partitions and replication.
            "auto.create.topics.enable=false",
            # Consumers in tests and demos should not wait 3 s for their first assignment.
            "group.initial.rebalance.delay.ms=0",
            "num.partitions=1",
        ]
        if self.security:
            lines += broker_lines(self.security)
        if size == 1:
            lines.append(f"controller.quorum.bootstrap.servers=127.0.0.1:{node.controller_port}")
        else:
            voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
            lines.append(f"controller.quorum.voters={voters}")
        return "\n".join(lines) + "\n"

    def _cluster_id(self) -> str:
        # Every node shares the first node's id file, so all are formatted alike.
        id_file = self.nodes[0].home / "cluster.id"
        if id_file.exists():
            return id_file.read_text().strip()
        cid = new_cluster_id()
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(cid + "\n")
        return cid

    def _format(self, java: str, libs: Path, node: KafkaNode, cluster_id: str) -> None:
        data = node.home / "data"
        meta = data / "meta.properties"
        if meta.exists() and f"cluster.id={cluster_id}" in meta.read_text():
            return  # formatted for this cluster already: reuse the storage
        shutil.rmtree(data, ignore_errors=True)
        cmd = [
            java,
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(node.home / "server.properties"),
        ]
        if len(self.nodes) == 1:
            cmd.append("--standalone")
        if self.security:
            cmd += scram_format_args(self.security)
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise DevServerError(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")

    def up(self, timeout_s: float = 90.0) -> bool:
        """Start every node not running and wait until the cluster serves.

        Returns whether anything was started. Safe to call again at any time.
        """
        java = require_java()
        libs = ensure_jars(self.cache)
        cluster_id = self._cluster_id()
        started = False
        for node in self.nodes:
            proc = self._process(node)
            if proc.pid() is not None:
                continue
            require_free_port(node.port, f"Kafka node {node.node_id}")
            require_free_port(node.controller_port, f"Kafka node {node.node_id}'s controller")
            node.home.mkdir(parents=True, exist_ok=True)
            (node.home / "server.properties").write_text(self._properties(node))
            self._format(java, libs, node, cluster_id)
            proc.start(
                [
                    java,
                    *JVM_OPTIONS,
                    "-Djava.awt.headless=true",
                    "-cp",
                    f"{libs}/*",
                    "kafka.Kafka",
                    str(node.home / "server.properties"),
                ],
                cwd=node.home,
            )
            started = True
        for node in self.nodes:
            self._process(node).wait_ready(self._serves, timeout_s)
        return started

    def _serves(self) -> bool:
        """A metadata request answered with every node registered: really serving."""
        from conveyor import _core

        try:
            cluster_id, brokers, _ = _core.kafka_cluster_info(self.bootstrap, timeout_s=1.0)
        except ConveyorError:
            return False
        if cluster_id != self._cluster_id():
            raise DevServerError(
                f"the Kafka answering at {self.bootstrap} is not the one under "
                f"{self.nodes[0].home} (cluster {cluster_id})"
            )
        return {b[0] for b in brokers} >= {n.node_id for n in self.nodes}

    def down(self) -> bool:
        """Stop every node; returns whether any was running.

        All nodes are signalled at once: stopped one by one, the last ones
        would wait for a controller quorum that is already gone."""
        running = [(p, p.request_stop()) for p in map(self._process, self.nodes)]
        for proc, pid in running:
            if pid is not None:
                proc.wait_stopped(pid)
        return any(pid is not None for _, pid in running)

    def status(self) -> list[tuple[KafkaNode, int | None]]:
        """Each node with its pid, or None when not running."""
        return [(n, self._process(n).pid()) for n in self.nodes]

    def stop_node(self, node_id: int) -> None:
        """Stop one node gracefully (for failure tests)."""
        for node in self.nodes:
            if node.node_id == node_id:
                self._process(node).stop()

    def kill_node(self, node_id: int) -> None:
        """Kill one node at once with SIGKILL (for failure tests)."""
        for node in self.nodes:
            if node.node_id == node_id:
                self._process(node).kill()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until the cluster serves (after `up`)."""
        deadline = time.monotonic() + timeout_s
        while not self._serves():
            if time.monotonic() > deadline:
                raise DevServerError(f"Kafka at {self.bootstrap} is not serving")
            time.sleep(0.2)
