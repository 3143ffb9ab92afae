"""The benchmarks' pure-Python peers speak Conveyor's Redis protocol with its
own Lua scripts, by file name; a script renamed (its key count changed) must
not leave a benchmark row silently broken until someone runs it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "rust" / "conveyor-core" / "src" / "store" / "scripts"


def test_every_script_a_benchmark_names_exists() -> None:
    named = {
        (path.relative_to(ROOT), name)
        for path in (ROOT / "bench").rglob("*.py")
        for name in re.findall(r"\b[a-z_]+-\d+\.lua\b", path.read_text())
    }
    assert named, "the pure-Python relay and worker name their scripts"
    missing = sorted((str(p), n) for p, n in named if not (SCRIPTS / n).exists())
    assert missing == []
