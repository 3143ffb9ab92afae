"""The gate's token file: bearer tokens and their scopes, read at start and
again when the file changes or the gate gets SIGHUP.

```json
{"tokens": [
  {"name": "billing-service", "token": "…", "types": ["billing.*"],
   "queues": ["billing"], "metrics": false, "rate": 200}
]}
```

`name` identifies a token in messages (the secret never appears in them);
`types` (exact names or prefixes ending in `*`) and `queues` limit what it
may send (absent or empty: anything); `metrics` lets it read `/metrics`;
`rate` caps its requests per second. A file that cannot be read or checked
leaves the tokens in force unchanged, with the reason logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError

log = logging.getLogger("conveyor.gate")

#: `(name, token, types, queues, metrics, rate)`, as `_core.Gate` takes them.
Token = tuple[str, str, list[str], list[str], bool, float | None]


def read_tokens(path: Path) -> list[Token]:
    """The tokens of `path`; `ConfigError` naming what is wrong (never a secret)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"token file {path}: {err}") from None
    entries = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'token file {path}: expected {{"tokens": [...]}}')
    return [_token(path, i, entry) for i, entry in enumerate(entries)]


def _token(path: Path, i: int, entry: Any) -> Token:
    where = f"token file {path}, entry {i}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = set(entry) - {"name", "token", "types", "queues", "metrics", "rate"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    name, token = entry.get("name"), entry.get("token")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: needs a name")
    if not isinstance(token, str) or len(token) < 16:
        raise ConfigError(f"{where} ({name}): needs a token of at least 16 characters")
    lists = []
    for key in ("types", "queues"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where} ({name}): {key} must be a list of names")
        lists.append(value)
    metrics = entry.get("metrics", False)
    rate = entry.get("rate")
    if not isinstance(metrics, bool):
        raise ConfigError(f"{where} ({name}): metrics must be true or false")
    ok_rate = isinstance(rate, int | float) and not isinstance(rate, bool)
    if rate is not None and not (ok_rate and math.isfinite(rate) and rate > 0):
        raise ConfigError(f"{where} ({name}): rate must be a positive number of requests/s")
    return (name, token, lists[0], lists[1], metrics, None if rate is None else float(rate))


class WatchedFile:
    """A file (token file, certificate) whose changes the gate acts on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def changed(self) -> bool:
        """Whether the file changed since the last call (or start)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True


def reload_tokens(path: Path, apply: Any) -> bool:
    """Reads the token file and hands its tokens to `apply`; keeps the
    tokens in force (and logs why) when it cannot. Returns whether it applied."""
    try:
        tokens = read_tokens(path)
        apply(tokens)
    except ConfigError as err:
        log.error("token file not reloaded, the tokens in force stay: %s", err)
        return False
    log.warning("token file reloaded: %d token(s) in force", len(tokens))
    return True
