"""Runs a documentation page's Python examples in order, in one namespace, as
a reader pasting them one after another would (`python -m
tests.helpers.doc_runner PAGE`, from tests/test_docs.py).

A block titled as a file (```` ```python title="hello.py" ````) is written to
that file in the current folder, importable by later blocks. Before each
block, if the page has made a `conveyor.Conveyor` named `app` with job types,
its queues' topics exist and a worker and a relay run for it, as the pages
say ("with a worker and a relay running"); they follow the job types the
page registered so far. Settings come from `CONVEYOR_*` variables (the test
servers, a namespace of the page's own).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import conveyor
from conveyor import _core

#: A fenced Python block: its info string (after `python`) and its code.
BLOCK = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


def examples(text: str) -> list[tuple[str | None, str]]:
    """`(file name or None, code)` of each Python block of a page, in order."""
    out = []
    for m in BLOCK.finditer(text):
        title = TITLE.search(m.group("info"))
        out.append((title.group("title") if title else None, m.group("code")))
    return out


class Served:
    """The worker and relay of the page's `app`, following its job types."""

    def __init__(self) -> None:
        self.key: tuple[int, frozenset[str]] | None = None
        self.worker: conveyor.Worker | None = None
        self.relay: Any = None

    def follow(self, namespace: dict[str, Any]) -> None:
        app = namespace.get("app")
        if not isinstance(app, conveyor.Conveyor) or not app.registry:
            return
        key = (id(app), frozenset(app.registry))
        if key == self.key:
            return
        self.stop()
        self.key = key
        s = app.settings
        app.ensure_topics()
        self.relay = _core.Relay(
            s.kafka_bootstrap,
            s.redis_url,
            [(s.topic_for(q), q) for q in sorted(app.queues())],
            namespace=s.namespace,
            group_id=f"docs-{s.namespace}",
        )
        self.worker = conveyor.Worker(app, threads=2)
        self.worker.start()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(grace_s=5)
        if self.relay is not None:
            self.relay.stop()
        self.worker = self.relay = None


def main(page: str) -> int:
    sys.path.insert(0, os.getcwd())
    namespace: dict[str, Any] = {"__name__": "__main__"}
    served = Served()
    try:
        for i, (title, code) in enumerate(examples(Path(page).read_text())):
            if title is not None:
                Path(title).write_text(code)
                continue
            served.follow(namespace)
            exec(compile(code, f"{page} (example {i + 1})", "exec"), namespace)
        app = namespace.get("app")
        if isinstance(app, conveyor.Conveyor):
            app.close()  # every job it sent acknowledged, or an error
    finally:
        served.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
