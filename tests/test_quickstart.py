"""docs/quickstart.md followed word for word on a fresh clone: its shell
blocks run in order in one shell (the file it shows saved where it says),
with nothing but `python3` and the machine's tools on PATH, against servers
of the quickstart's own (`conveyor dev up` on ports of this test)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conveyor.devservers import DevServers
from tests.helpers.doc_runner import TITLE
from tests.helpers.ports import fixed_port

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[1]
#: `conveyor dev up` of the quickstart, apart from the suite's servers.
KAFKA_PORT = fixed_port(29340)
REDIS_PORT = fixed_port(26694)

BLOCK = re.compile(r"^```(?P<lang>sh|python)(?P<info>[^\n]*)\n(?P<code>.*?)^```", re.M | re.S)


def script(page: str) -> str:
    """The page's shell blocks in order, each file block saved by a heredoc."""
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for m in BLOCK.finditer(page):
        if m.group("lang") == "sh":
            lines.append(m.group("code"))
            continue
        title = TITLE.search(m.group("info"))
        assert title, "every Python block of the quickstart is a file to save"
        lines.append(f"cat > {title.group('title')} <<'PYTHON'\n{m.group('code')}PYTHON")
    return "\n".join(lines) + "\n"


def test_the_quickstart_word_for_word(tmp_path: Path) -> None:
    clone = tmp_path / "conveyor"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    steps = script((clone / "docs" / "quickstart.md").read_text())
    # A newcomer's shell: no virtualenv of ours on PATH.
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if "venv" not in p and "/.venv" not in p
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "VIRTUAL_ENV"))},
        "PATH": path,
        "CONVEYOR_DEV_HOME": str(tmp_path / "dev"),
        "CONVEYOR_DEV_KAFKA_PORT": str(KAFKA_PORT),
        "CONVEYOR_DEV_REDIS_PORT": str(REDIS_PORT),
        # Only a cache: the first build of a checkout compiles librdkafka.
        "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")),
    }
    try:
        ran = subprocess.run(
            ["bash", "-c", steps],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        # Whatever step failed, the quickstart's servers do not outlive it.
        DevServers.at(tmp_path / "dev", kafka_port=KAFKA_PORT, redis_port=REDIS_PORT).down()
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out[-5000:]
    assert "\nhello, world\n" in ran.stdout, out[-5000:]
    assert "jobs per hop" in ran.stdout, "conveyor status ran"
    assert "stopped local Kafka and Redis" in ran.stdout
