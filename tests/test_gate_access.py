"""Who may send what through the gate: several tokens, each limited to job
types and queues and to a rate, replaceable without a restart; a refusal that
never reveals which job types exist; `/metrics` behind a token; no open gate
on the network unless chosen."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor import _core
from conveyor.errors import ConfigError
from tests.helpers.certs import make_certs
from tests.helpers.ports import fixed_port
from tests.helpers.waiting import wait_until
from tests.test_gate import post

pytestmark = pytest.mark.servers

Token = tuple[str, str, list[str], list[str], bool, float | None]

BILLING: Token = ("billing-svc", "b" * 24, ["billing.*"], [], False, None)
PUSH_QUEUE: Token = ("push-svc", "p" * 24, [], ["default"], False, None)
OPS: Token = ("ops", "o" * 24, [], [], True, 3.0)


@pytest.fixture
def app(gate_app: conveyor.Conveyor) -> conveyor.Conveyor:
    return gate_app


@pytest.fixture
def gate(app: conveyor.Conveyor) -> Iterator[_core.Gate]:
    s = app.settings
    gate = _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        routes={"billing.charge": "billing", "notify.push": "default"},
        tokens=[BILLING, PUSH_QUEUE, OPS],
    )
    yield gate
    gate.stop()


def job(job_type: str) -> bytes:
    return json.dumps({"type": job_type}).encode()


def get(address: str, path: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://{address}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError:
        return 0  # not listening (yet)


def test_each_token_sends_only_what_its_scope_allows(gate: _core.Gate) -> None:
    a = gate.address
    assert post(a, "/v1/jobs", job("notify.push"))[0] == 401, "no token"
    assert post(a, "/v1/jobs", job("notify.push"), token="x" * 24)[0] == 401, "unknown token"
    assert post(a, "/v1/jobs", job("billing.charge"), token=BILLING[1])[0] == 200
    status, answer, _ = post(a, "/v1/jobs", job("notify.push"), token=BILLING[1])
    assert (status, answer["code"]) == (403, "forbidden"), "a type outside its scope"
    assert post(a, "/v1/jobs", job("notify.push"), token=PUSH_QUEUE[1])[0] == 200
    assert post(a, "/v1/jobs", job("billing.charge"), token=PUSH_QUEUE[1])[0] == 403, "queue"
    # A batch with one job out of scope sends nothing.
    batch = json.dumps({"jobs": [{"type": "billing.charge"}, {"type": "notify.push"}]}).encode()
    status, answer, _ = post(a, "/v1/jobs/batch", batch, token=BILLING[1])
    assert (status, answer["index"]) == (403, 1)


def test_a_refusal_never_says_whether_a_job_type_exists(gate: _core.Gate) -> None:
    """Out of scope, an existing and a made-up type get the same answer;
    only a token allowed the name learns that it does not exist."""
    a = gate.address
    for token in (BILLING[1], PUSH_QUEUE[1]):
        existing = post(
            a,
            "/v1/jobs",
            job("notify.push" if token == BILLING[1] else "billing.charge"),
            token=token,
        )
        made_up = post(a, "/v1/jobs", job("secret.nothing"), token=token)
        assert existing[0] == made_up[0] == 403
        assert existing[1]["code"] == made_up[1]["code"] == "forbidden"
    assert post(a, "/v1/jobs", job("billing.nothing"), token=BILLING[1])[0] == 422
    for bad in (None, "x" * 24):
        assert post(a, "/v1/jobs", job("secret.nothing"), token=bad)[0] == 401
        assert post(a, "/v1/jobs", job("notify.push"), token=bad)[0] == 401


def test_a_token_over_its_rate_gets_429_and_metrics_need_a_token_that_may_read_them(
    gate: _core.Gate,
) -> None:
    a = gate.address
    assert get(a, "/metrics") == 401
    assert get(a, "/metrics", BILLING[1]) == 403
    statuses = [get(a, "/metrics", OPS[1]) for _ in range(8)]
    assert statuses[:3] == [200, 200, 200], statuses
    assert 429 in statuses, "three a second, then refused"
    time.sleep(1.1)
    assert get(a, "/metrics", OPS[1]) == 200, "refilled"
    assert get(a, "/healthz") == 200, "health stays open for orchestrators"


def test_tokens_are_replaced_without_a_restart_and_bad_ones_refused(gate: _core.Gate) -> None:
    a = gate.address
    fresh: Token = ("new-svc", "n" * 24, [], [], False, None)
    gate.set_tokens([fresh])
    assert post(a, "/v1/jobs", job("notify.push"), token=BILLING[1])[0] == 401
    assert post(a, "/v1/jobs", job("notify.push"), token=fresh[1])[0] == 200
    with pytest.raises(ConfigError, match="rate"):
        gate.set_tokens([("x", "y" * 24, [], [], False, -1.0)])
    with pytest.raises(ConfigError, match="twice"):
        gate.set_tokens([fresh, fresh])
    assert post(a, "/v1/jobs", job("notify.push"), token=fresh[1])[0] == 200, "still in force"


def test_no_open_gate_on_the_network_unless_chosen(app: conveyor.Conveyor) -> None:
    """Refused before anything is bound: no traffic leaves loopback."""
    with pytest.raises(ConfigError, match="without tokens"):
        _core.Gate(f"0.0.0.0:{fixed_port(29481)}", app.settings.kafka_bootstrap)


def write_tokens(path: Path, *tokens: Token) -> None:
    keys = ("name", "token", "types", "queues", "metrics", "rate")
    path.write_text(json.dumps({"tokens": [dict(zip(keys, t, strict=True)) for t in tokens]}))


def test_the_gate_command_reloads_its_token_file_on_sighup_and_keeps_good_tokens(
    app: conveyor.Conveyor, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.json"
    write_tokens(tokens, BILLING)
    env = dict(os.environ)
    env.update(
        CONVEYOR_KAFKA_BOOTSTRAP=app.settings.kafka_bootstrap,
        CONVEYOR_NAMESPACE=app.settings.namespace,
    )
    address = f"127.0.0.1:{fixed_port(29482)}"
    cmd = [sys.executable, "-m", "conveyor", "gate", "--bind", address, "--no-registry"]
    cmd += ["--route", "billing.charge=billing", "--tokens", str(tokens)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: get(address, "/healthz") == 200, 30, "the gate serving")
        assert post(address, "/v1/jobs", job("billing.charge"), token=BILLING[1])[0] == 200
        other: Token = ("other", "q" * 24, [], [], False, None)
        write_tokens(tokens, other)
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: post(address, "/v1/jobs", job("billing.charge"), token=BILLING[1])[0] == 401,
            10,
            "the old token refused",
        )
        assert post(address, "/v1/jobs", job("billing.charge"), token=other[1])[0] == 200
        tokens.write_text("{not json")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert post(address, "/v1/jobs", job("billing.charge"), token=other[1])[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    log = err.decode()
    assert "not reloaded" in log, log[-2000:]
    assert "reloaded: 1 token(s)" in log, log[-2000:]
    assert BILLING[1] not in log, "secrets never in the log"
    assert "q" * 24 not in log


def https_post(address: str, body: bytes, token: str, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(
        f"https://{address}/v1/jobs", data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_the_gate_serves_https_reloads_its_certificate_and_refuses_plain_http_off_loopback(
    app: conveyor.Conveyor, tmp_path: Path
) -> None:
    first = make_certs(tmp_path / "first")
    renewed = make_certs(tmp_path / "renewed")  # another CA: tells the two apart
    cert, key = tmp_path / "gate.pem", tmp_path / "gate.key"
    cert.write_bytes(first.server_cert.read_bytes())
    key.write_bytes(first.server_key.read_bytes())
    s = app.settings
    gate = _core.Gate(
        "127.0.0.1:0",
        s.kafka_bootstrap,
        namespace=s.namespace,
        routes={"notify.push": "default"},
        tokens=[PUSH_QUEUE],
        tls_cert=cert,
        tls_key=key,
    )
    try:
        assert gate.https
        body = job("notify.push")
        assert https_post(gate.address, body, PUSH_QUEUE[1], first.ca) == 200
        with pytest.raises(urllib.error.URLError):
            https_post(gate.address, body, PUSH_QUEUE[1], renewed.ca)  # not its CA
        with pytest.raises((http.client.HTTPException, OSError)):  # no plain HTTP there
            urllib.request.urlopen(f"http://{gate.address}/healthz", timeout=5)
        # A renewed certificate, put in force without a restart.
        cert.write_bytes(renewed.server_cert.read_bytes())
        key.write_bytes(renewed.server_key.read_bytes())
        gate.reload_tls()
        assert https_post(gate.address, body, PUSH_QUEUE[1], renewed.ca) == 200
        # A broken file leaves the certificate in force.
        key.write_text("not a key")
        with pytest.raises(ConfigError):
            gate.reload_tls()
        assert https_post(gate.address, body, PUSH_QUEUE[1], renewed.ca) == 200
    finally:
        gate.stop()
    # Off loopback, tokens alone are not enough: they would cross the network in clear.
    with pytest.raises(ConfigError, match="plain HTTP"):
        _core.Gate(f"0.0.0.0:{fixed_port(29483)}", s.kafka_bootstrap, tokens=[PUSH_QUEUE])
    with pytest.raises(ConfigError, match="both tls_cert and tls_key"):
        _core.Gate("127.0.0.1:0", s.kafka_bootstrap, tls_cert=cert)
