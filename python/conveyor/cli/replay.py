"""`replay`: run a time range of a queue's jobs again, read back from Kafka.

The operator's tool after a bad deploy or a lost Redis: Kafka keeps every job
for its retention, so the jobs enqueued between two times (by the broker's
append time) are read from the queue's topic and admitted into its Redis
queue again, through the same `admit` script as the direct path. They keep
their ids; a unique job whose dedup key is held now is dropped as a duplicate
and counted. Shadowed (double-written) copies are skipped: Redis got those
through the direct path, and their Kafka copies were never meant to run.
"""

from __future__ import annotations

import argparse
import datetime
import sys

from conveyor.errors import ConfigError, ConveyorError

#: Records read from Kafka per call, and jobs admitted per Redis call.
_CHUNK = 1000


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `replay`."""
    replay = commands.add_parser(
        "replay", help="run a time range of a queue's jobs again, read back from Kafka"
    )
    replay.add_argument("queue")
    replay.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME",
        help="ISO 8601 time (UTC unless it says otherwise), or an age like 90m, 2h, 1d",
    )
    replay.add_argument("--to", dest="end", metavar="TIME", help="same forms (default: now)")
    replay.add_argument(
        "--type", dest="job_type", action="append", help="only jobs of this type (repeatable)"
    )
    replay.set_defaults(run=_replay)


def parse_time(text: str, now_s: float) -> int:
    """`text` as ms since the epoch: an ISO 8601 time, or an age before
    `now_s` such as `90s`, `30m`, `2h`, `1d`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return int((now_s - float(text[:-1]) * units[text[-1]]) * 1000)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither an ISO 8601 time nor an age like 90m, 2h, 1d"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1000)


def _replay(args: argparse.Namespace) -> int:
    import time

    from conveyor import _core
    from conveyor.envelope import Stage
    from conveyor.settings import Settings

    settings = Settings.from_env()
    _core.check_queue_name(args.queue)
    now_s = time.time()
    start_ms = parse_time(args.start, now_s)
    end_ms = parse_time(args.end, now_s) if args.end else int(now_s * 1000)
    if end_ms <= start_ms:
        raise ConfigError(f"--to must come after --from ({args.end} is not after {args.start})")
    types = set(args.job_type or ())
    topic = settings.topic_for(args.queue)
    bootstrap, properties = settings.kafka_bootstrap, list(settings.kafka_properties)
    starts = dict(_core.kafka_offsets_for_time(bootstrap, topic, start_ms, properties=properties))
    ends = dict(_core.kafka_offsets_for_time(bootstrap, topic, end_ms, properties=properties))
    store = _core.RedisStore(settings.redis_url_for(args.queue))
    read = queued = scheduled = duplicates = undecodable = 0
    for partition in sorted(starts):
        offset, end = starts[partition], ends[partition]
        while offset < end:
            records = _core.kafka_read_partition(
                bootstrap,
                topic,
                partition,
                offset,
                min(_CHUNK, end - offset),
                properties=properties,
            )
            if not records:
                break
            offset = records[-1].offset + 1
            read += len(records)
            jobs = []
            for record in records:
                try:
                    envelope = _core.Envelope.decode(record.value)
                except ConveyorError:
                    undecodable += 1  # the relay dead-lettered it when it read it
                    continue
                if types and envelope.job_type not in types:
                    continue
                if any(code == Stage.DOUBLE_WRITTEN for code, _ in envelope.stages):
                    continue
                jobs.append(record.value)
            if jobs:
                q, s, d = store.admit(settings.namespace, args.queue, jobs, tally=settings.tallies)
                queued, scheduled, duplicates = queued + q, scheduled + s, duplicates + d
            print(
                f"\r{args.queue}: {read} records read, {queued + scheduled} jobs replayed ...",
                end="",
                flush=True,
                file=sys.stderr,
            )
    print(file=sys.stderr)
    print(
        f"{args.queue}: {read} records read from {topic}; {queued} jobs queued, "
        f"{scheduled} scheduled, {duplicates} dropped as duplicates, "
        f"{undecodable} not envelopes (skipped)"
    )
    return 0
