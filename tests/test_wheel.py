"""The wheel a user installs: `make wheel` builds one abi3 wheel that
auditwheel accepts; installed alone into a fresh virtualenv of each supported
Python (3.10 to 3.13) with no Rust toolchain on PATH, it runs jobs end to end
through the real servers (tests/wheel_check.py)."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from conveyor.devservers import DevServers

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")

pytestmark = pytest.mark.servers


def interpreter(version: str) -> str:
    """A CPython `version` interpreter: `CONVEYOR_TEST_PYTHON_<3_10>` or pyenv's."""
    override = os.environ.get(f"CONVEYOR_TEST_PYTHON_{version.replace('.', '_')}")
    if override:
        return override
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"))
    if not found:
        pytest.fail(f"no Python {version}: install it with pyenv, or name it in the environment")
    return found[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    made = subprocess.run(
        ["make", "-s", "wheel", f"WHEEL_DIR={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    (built,) = out.glob("conveyor-*.whl")
    return built


def test_the_wheel_is_one_abi3_manylinux_wheel_with_what_tls_needs(wheel: Path) -> None:
    # One wheel for every CPython from 3.10 on, tagged for a glibc policy.
    assert "-cp310-abi3-manylinux_" in wheel.name, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "conveyor/_core.abi3.so" in names
    assert "conveyor/py.typed" in names
    assert "conveyor/_core.pyi" in names
    # OpenSSL is built into the extension (TLS to Kafka), not taken from
    # the system; auditwheel carries in anything else it links.
    extension = zipfile.ZipFile(wheel).read("conveyor/_core.abi3.so")
    assert re.search(rb"OpenSSL 3\.\d+\.\d+", extension), "no OpenSSL built in"
    assert b"libssl.so" not in extension


@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", SUPPORTED)
def test_the_wheel_runs_jobs_on_each_python(
    wheel: Path, version: str, tmp_path: Path, servers: DevServers
) -> None:
    python = interpreter(version)
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    # No Rust toolchain and no checkout: only the virtualenv and the system.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    ran = subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(ROOT / "tests" / "wheel_check.py"),
            servers.kafka.bootstrap,
            servers.redis.url,
            f"wh{uuid.uuid4().hex[:6]}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert got["python"] == [int(p) for p in version.split(".")]
    assert got["extension"] == "_core.abi3.so"
    assert got["sums"] == list(range(1, 21))
    # Async timeouts end as JobTimeout on every version (3.10's asyncio has
    # its own TimeoutError), and the CLI prints the dead letter's time.
    assert got["dead_errors"] == ["JobTimeout"], got
    assert got["cli_rc"] == 0, got["cli_out"]
    assert "wheel.slow" in got["cli_out"], got["cli_out"]
