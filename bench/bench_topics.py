"""Benchmarks delete the Kafka topics they create.

Every partition the dev broker keeps costs it CPU while idle: after a day of
benchmark runs it held 561 topics and spent a fifth of a core on them, which
slowed every later measurement. Call `delete_new_topics_at_exit(bootstrap)`
once the servers are up; at exit, topics that appeared since are deleted.
"""

from __future__ import annotations

import atexit

from conveyor import _core


def delete_new_topics_at_exit(bootstrap: str) -> None:
    """Snapshot the broker's topics now; delete the ones added by exit."""
    before = set(_core.kafka_cluster_info(bootstrap)[2])

    def clean() -> None:
        created = sorted(set(_core.kafka_cluster_info(bootstrap)[2]) - before)
        if created:
            deleted = _core.kafka_delete_topics(bootstrap, created)
            print(f"deleted the {deleted} Kafka topic(s) this run created")

    atexit.register(clean)
