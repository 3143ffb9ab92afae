"""The documentation's examples: every Python example on its pages and in the
README runs, in order, against the real servers (`tests/helpers/doc_runner.py`
says how); every `conveyor` command line parses, and those that do their work
and end run against the servers too. The site's build: tests/test_site.py."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.doc_runner import examples

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in [*ROOT.glob("docs/*.md"), ROOT / "README.md"]
    if examples(p.read_text())
)


def test_the_pages_have_examples() -> None:
    assert {"README.md", "docs/quickstart.md", "docs/results.md"} <= set(PAGES)


@pytest.mark.servers
@pytest.mark.parametrize("page", PAGES)
def test_every_example_runs(page: str, conveyor_env: dict[str, str], tmp_path: Path) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "tests.helpers.doc_runner", str(ROOT / page)],
        cwd=tmp_path,
        env=conveyor_env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]


def command_lines() -> list[tuple[str, str]]:
    """`(page, command)` for each `conveyor ...` line of a shell example."""
    block = re.compile(r"^```sh\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
    out = []
    for page in [*ROOT.glob("docs/*.md"), ROOT / "README.md"]:
        for m in block.finditer(page.read_text()):
            for line in m.group("code").replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                while words and "=" in words[0]:  # VAR=value before the command
                    words.pop(0)
                for end in ("|", "&&", ";", "&"):  # the first command of a pipeline
                    if end in words:
                        words = words[: words.index(end)]
                if words and Path(words[0]).name == "conveyor":
                    out.append((page.relative_to(ROOT).as_posix(), shlex.join(words[1:])))
    return out


def test_every_command_line_in_the_docs_is_one_the_cli_takes() -> None:
    """Each `conveyor ...` line of a shell example parses with the real
    command-line parser, so a renamed command or flag cannot stay in the docs.
    The one-shot commands are also run (next test); the long-running ones
    (worker, relay, gate, dashboard, dev servers) are run where the
    quickstart uses them, by tests/test_quickstart.py."""
    from conveyor.cli import build_parser

    lines = command_lines()
    assert len(lines) > 40
    bad = []
    for page, line in lines:
        # An elided example (`conveyor gate ...`) is checked up to the dots.
        words = [w for w in shlex.split(line) if w != "..."]
        if words == ["gate"]:
            continue  # `conveyor gate` alone needs its options: the dots stand for them
        try:
            build_parser().parse_args(words)
        except SystemExit:
            bad.append(f"{page}: conveyor {line}")
    assert not bad, "\n".join(bad)


#: Commands that start something that runs until stopped (or the servers
#: themselves): parsed above, not run here; the quickstart runs its own.
LONG_RUNNING = frozenset({"worker", "relay", "gate", "dashboard", "dev"})


@pytest.mark.servers
def test_every_one_shot_command_in_the_docs_runs(conveyor_env: dict[str, str]) -> None:
    """Each documented command that does its work and ends runs against the
    real servers, in page order, in this test's namespace: it works, or it
    refuses with a message of its own (an id the docs made up is not found,
    a topic the page assumes is not there): never a traceback, never a hang."""
    lines = [(p, line) for p, line in command_lines() if line.split()[0] not in LONG_RUNNING]
    assert len(lines) > 25
    bad = []
    for page, line in lines:
        ran = subprocess.run(
            [sys.executable, "-m", "conveyor", *shlex.split(line)],
            env=conveyor_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        said = (ran.stdout + ran.stderr).strip()
        # 1: done, with something to attend to; 2: refused, with its reason.
        refused = ran.returncode == 2 and ran.stderr.startswith("conveyor: ")
        if (ran.returncode not in (0, 1) and not refused) or "Traceback" in said or not said:
            bad.append(f"{page}: conveyor {line} -> exit {ran.returncode}: {said[-600:]}")
    assert not bad, "\n".join(bad)
