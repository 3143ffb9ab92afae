"""The documentation: the site builds with strict checking, and every Python
example on its pages and in the README runs, in order, against the real
servers (`tests/helpers/doc_runner.py` says how)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.devservers import DevServers
from tests.helpers.doc_runner import examples

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in [*ROOT.glob("docs/*.md"), ROOT / "README.md"]
    if examples(p.read_text())
)


def test_the_site_builds_with_strict_checking(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    built = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "enqueue_async" in reference, "the API reference comes from the docstrings"


def test_the_pages_have_examples() -> None:
    assert {"README.md", "docs/quickstart.md", "docs/results.md"} <= set(PAGES)


@pytest.mark.servers
@pytest.mark.parametrize("page", PAGES)
def test_every_example_runs(page: str, servers: DevServers, namespace: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CONVEYOR_KAFKA_BOOTSTRAP": servers.kafka.bootstrap,
        "CONVEYOR_REDIS_URL": servers.redis.url,
        "CONVEYOR_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
    }
    ran = subprocess.run(
        [sys.executable, "-m", "tests.helpers.doc_runner", str(ROOT / page)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
