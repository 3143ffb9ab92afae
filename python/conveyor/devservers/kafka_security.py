"""TLS and SASL listeners for a local Kafka node, for tests of secured
clients: an `SSL` listener that requires a client certificate, and a
`SASL_SSL` listener taking `PLAIN` and `SCRAM-SHA-256/512` users. The
certificates are PEM files (made by the caller, for example at test time);
SCRAM users are written into the node's storage when it is formatted, as
KRaft wants. The plaintext listener stays for the brokers themselves."""

from __future__ import annotations

from dataclasses import dataclass

#: Offsets from a node's plaintext port of its `SSL` and `SASL_SSL` ports.
SSL_OFFSET, SASL_SSL_OFFSET = 50, 51


@dataclass(frozen=True)
class KafkaSecurity:
    """Certificates (PEM) of the brokers' TLS listeners, and SASL users."""

    #: The CA that signed `cert` and that client certificates must chain to.
    ca: str
    #: The broker's certificate (for 127.0.0.1) and its unencrypted PKCS#8 key.
    cert: str
    key: str
    #: `(user, password)`: accepted by PLAIN and by both SCRAM mechanisms.
    users: tuple[tuple[str, str], ...] = ()


def listeners(security: KafkaSecurity, port: int) -> dict[str, int]:
    """Listener name -> port of a node whose plaintext port is `port`."""
    return {"SSL": port + SSL_OFFSET, "SASL_SSL": port + SASL_SSL_OFFSET}


def broker_lines(security: KafkaSecurity) -> list[str]:
    """server.properties lines for the secured listeners (names them, not ports)."""
    plain_users = " ".join(f'user_{u}="{p}"' for u, p in security.users)
    lines = [
        # Kafka reads PEM directly: the key and chain from one file each.
        "ssl.keystore.type=PEM",
        f"ssl.keystore.certificate.chain={_one_line(security.cert)}",
        f"ssl.keystore.key={_one_line(security.key)}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.certificates={_one_line(security.ca)}",
        "ssl.endpoint.identification.algorithm=",
        "listener.name.ssl.ssl.client.auth=required",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_ssl.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
    ]
    for mechanism in ("scram-sha-256", "scram-sha-512"):
        lines.append(
            f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    return lines


def scram_format_args(security: KafkaSecurity) -> list[str]:
    """`kafka-storage format` arguments that create the SCRAM users."""
    args = []
    for user, password in security.users:
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return args


def _one_line(path: str) -> str:
    """A PEM file as a properties value: its lines joined by escaped newlines."""
    with open(path) as f:
        return "\\n".join(line.rstrip("\n") for line in f if line.strip())
