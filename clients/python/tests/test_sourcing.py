"""Event sourcing through the Python client against a real server: a subject's stream with
versions, publishing with ``expected_version`` (``VersionConflict`` with the current
version when the subject moved on), and ``examples/deal_history.py`` rebuilding a deal."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any, Callable

import pytest

from crmbus import Client, VersionConflict

from conftest import REPO, Server


def deal_event(kind: str, deal_id: str, n: int, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{deal_id}-{n}",
        "source": "urn:test:crm",
        "type": kind,
        "subject": deal_id,
        "data": {"deal_id": deal_id, **data},
    }


def test_read_subject_and_expected_versions(server: Server, make_topic: Callable[..., str]) -> None:
    topic = make_topic("sourcing")
    c: Client = server.client
    for n, stage in enumerate(["prospecting", "qualification", "proposal"]):
        event = deal_event("deal.stage_changed", "deal-1", n, old_stage="lead", new_stage=stage)
        r = c.publish(event, [topic])
        assert r[0].version == n + 1
    c.publish(deal_event("deal.created", "deal-2", 0, name="Two"), [topic])
    stream = c.read_subject(topic, "deal-1")
    assert stream.version == 3
    assert [(e.version, e.event["data"]["new_stage"]) for e in stream.events] == [
        (1, "prospecting"), (2, "qualification"), (3, "proposal")]
    assert stream.next_version == 4
    assert [e.version for e in c.read_subject(topic, "deal-1", from_version=3).events] == [3]
    assert [e.version for e in c.subject_history(topic, "deal-1", from_version=2)] == [2, 3]

    with pytest.raises(VersionConflict) as err:
        c.publish(deal_event("deal.won", "deal-1", 9, amount="10.00", currency="EUR"), [topic], expected_version=2)
    assert err.value.current_version == 3
    assert err.value.status == 409
    assert c.read_subject(topic, "deal-1").version == 3
    r = c.publish(deal_event("deal.won", "deal-1", 10, amount="10.00", currency="EUR"), [topic], expected_version=3)
    assert r[0].version == 4
    # A new subject is at version 0.
    assert c.publish(deal_event("deal.created", "deal-3", 0, name="Three"), [topic], expected_version=0)[0].version == 1


def _example() -> Any:
    path = REPO / "examples" / "deal_history.py"
    spec = importlib.util.spec_from_file_location("deal_history", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_deal_history_example_rebuilds_a_deal_from_its_stream(
    server: Server, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("deals")
    example = _example()
    state, conflicts = example.demo(server.client, topic)
    # The stale writer's deal.lost was refused; the rest of the history made the deal.
    assert conflicts == 1
    assert state["status"] == "won"
    assert state["stage"] == "qualification"
    assert state["amount"] == "15000.00"
    assert state["close_date"] == "2026-12-05"
    assert state["version"] == 4
    # The script, run on its own against the same server, rebuilds the same deal.
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "deal_history.py"), topic, state["deal_id"],
         "--url", server.url],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(out.stdout) == state
    missing = subprocess.run(
        [sys.executable, str(REPO / "examples" / "deal_history.py"), topic, "deal-none",
         "--url", server.url],
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 1
    assert "has no events" in missing.stderr
