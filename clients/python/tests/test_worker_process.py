"""`crmbus-worker MODULE` as a process: SIGTERM stops it gracefully — the handler running
finishes and its event is acked, nothing more is pulled, exit 0 — and a second worker
gets exactly the events the first did not finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from crmbus import CrmbusBackend, Event, EventBus

from conftest import TESTS, wait_for

WORKER = str(Path(sys.executable).parent / "crmbus-worker")


def start_worker(server, env_extra, log_path, *args):
    env = {**os.environ, "CRMBUS_URL": server.url, **env_extra}
    env.pop("EVENT_BUS_BACKEND", None)
    log = open(log_path, "wb")
    proc = subprocess.Popen([WORKER, "worker_app", "--concurrency", "1", *args],
                            cwd=TESTS, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def test_sigterm_stops_the_worker_without_losing_an_acked_event(server, make_topic, unique,
                                                                  tmp_path):
    topic = make_topic("deals", partitions=1)
    group = unique("sigterm")
    out = tmp_path / "handled.txt"
    release = tmp_path / "release"
    env = {"TEST_TOPIC": topic, "TEST_GROUP": group, "TEST_OUT": str(out),
           "TEST_HOLD": "3", "TEST_RELEASE": str(release)}
    # One deal: the subscription hands its events out one at a time in order.
    bus = EventBus(CrmbusBackend(server.url))
    bus.publish_batch([Event("deal.updated", {"deal_id": "d-1", "seq": i})
                       for i in range(10)], topics=[topic])

    proc, log = start_worker(server, env, tmp_path / "worker1.log")
    try:
        # The handler of seq 3 is running (and waiting) when SIGTERM arrives.
        wait_for(lambda: Path(str(out) + ".started").exists(), "the handler of seq 3 started")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: b"stopping (SIGTERM)" in (tmp_path / "worker1.log").read_bytes(),
                 "the worker says it is stopping")
        release.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    first = out.read_text().split()
    assert first == ["0", "1", "2", "3"]  # seq 3 finished; nothing pulled after the signal
    # The ack of seq 3 is settled when the worker exits; the engine commits it a moment
    # later (its own loop), so the lag is waited for, not read once.
    wait_for(lambda: _status(server, group)["leased"] == 0 and _status(server, group)["lag"] == 6,
             "seq 3's ack committed and the other six left")

    out2 = tmp_path / "handled2.txt"
    proc2, log2 = start_worker(server, {**env, "TEST_OUT": str(out2), "TEST_HOLD": ""},
                               tmp_path / "worker2.log", "--limit", "6")
    try:
        assert proc2.wait(timeout=120) == 0
    finally:
        if proc2.poll() is None:
            proc2.kill()
        log2.close()
    second = out2.read_text().split()
    assert second == ["4", "5", "6", "7", "8", "9"]
    wait_for(lambda: _status(server, group)["lag"] == 0
             and _status(server, group)["leased"] == 0
             and _status(server, group)["in_flight"] == 0,
             "every event committed")


def _status(server, group):
    return server.client.get_subscription(group)["status"]
