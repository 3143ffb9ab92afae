"""Log lines of Conveyor's processes: text for people, or one JSON object per
line for log pipelines (`CONVEYOR_LOG_FORMAT=json`, or `--log-format json`).

A JSON line carries `time` (UTC, ISO 8601), `level`, `logger` and `message`,
and, on every line logged while a job runs in that thread (by Conveyor or by
the handler's own `logging` calls), the job's `job_id`, `job_type`, `queue`
and `attempt`; a line with an exception has its traceback in `error`. A line
about a job logged elsewhere passes them as `extra={"job_id": ...}`.
"""

from __future__ import annotations

import datetime
import json
import logging
import os

from conveyor.errors import ConfigError
from conveyor.job_context import current_job

#: The formats `configure` takes.
FORMATS = ("text", "json")
TEXT = "%(asctime)s %(name)s: %(message)s"
_JOB_FIELDS = ("job_id", "job_type", "queue", "attempt")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the running job's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = current_job()
        if job is not None:
            line.update(job_id=job.id, job_type=job.job_type, queue=job.queue, attempt=job.attempt)
        for name in _JOB_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(log_format: str | None = None, level: int = logging.INFO) -> None:
    """Sends the process' log records to stderr in `log_format` (default:
    `CONVEYOR_LOG_FORMAT`, else text)."""
    chosen = log_format or os.environ.get("CONVEYOR_LOG_FORMAT") or "text"
    if chosen not in FORMATS:
        raise ConfigError(f"the log format is one of {', '.join(FORMATS)}, not {chosen!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
