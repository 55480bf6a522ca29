"""When the views say a cluster's steps wait for a worker: no poller known, or none seen for
longer than a long poll (the server keeps a stopped worker's polls for minutes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.taskqueue.v1 import PollerInfo

from client.worker_presence import QUIET, absence

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def poller(seen_ago: timedelta) -> PollerInfo:
    stamp = Timestamp()
    stamp.FromDatetime(NOW - seen_ago)
    return PollerInfo(last_access_time=stamp, identity="worker@host")


def test_no_poller_is_no_worker() -> None:
    assert absence([], NOW) == "no worker polls it"
    assert absence([PollerInfo(identity="no time")], NOW) == "no worker polls it"


def test_a_poller_seen_within_a_long_poll_serves_the_queue() -> None:
    assert absence([poller(timedelta(seconds=5))], NOW) is None
    assert absence([poller(timedelta(minutes=4)), poller(QUIET)], NOW) is None


def test_a_worker_unseen_for_longer_is_reported_stopped_or_busy_with_how_long() -> None:
    why = absence([poller(timedelta(minutes=3)), poller(timedelta(minutes=2, seconds=5))], NOW)
    assert why == "no worker polled it for 2m5s (stopped, or every one of its slots busy)"
