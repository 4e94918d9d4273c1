"""CrmbusBackend against a real crmbus server: publish (durable receipts, several topics,
dedupe on retry), batches, errors, metadata round trip, and subscriptions consumed by the
worker (per-subject order, retries then the dead-letter queue seen by `crmbus dlq list`,
async handlers, unsubscribe)."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time

import pytest

from crmbus import (
    CrmbusBackend,
    Event,
    EventBus,
    SchemaViolation,
    ServerUnreachable,
    SubscriptionNotFound,
    TopicNotFound,
    publish_event,
)
from crmbus.testing import use_event_bus

from conftest import ThreadWorker, wait_for


def read_all(server, topic):
    events = []
    for p in server.client.get_topic(topic)["partition_info"]:
        answer = server.client.read_events(topic, partition=p["partition"], limit=1000)
        events.extend(answer["events"])
    return events


def test_publish_returns_durable_receipts_per_topic(server, make_topic):
    deals, sales = make_topic("deals"), make_topic("sales")
    bus = EventBus(CrmbusBackend(server.url))
    event = Event("deal.won", {"deal_id": "d-42", "amount": "1250.00"},
                  {"user_id": "u-1", "company_id": "c-1", "timestamp": "2024-05-01T12:00:00"})
    receipts = bus.publish(event, topics=[deals, sales])
    assert [r.topic for r in receipts] == [deals, sales]
    assert all(r.id == event.id and not r.duplicate for r in receipts)
    assert event.receipts == receipts
    # Stored: each topic serves it, with the subject as the ordering key.
    for topic in (deals, sales):
        [stored] = read_all(server, topic)
        assert stored["event"]["id"] == event.id and stored["event"]["subject"] == "d-42"
        back = Event.from_cloudevent_dict(stored["event"])
        assert back.metadata == event.metadata and back.data == event.data
    # Publishing the same event again (what a retry does) stores nothing new.
    again = bus.publish(event, topics=[deals, sales])
    assert all(r.duplicate for r in again)
    assert [(r.partition, r.offset) for r in again] == [(r.partition, r.offset) for r in receipts]
    assert len(read_all(server, deals)) == 1


def test_publish_event_with_crmbus_backend_as_the_global_bus(server, make_topic):
    deals = make_topic("deals")
    with use_event_bus(EventBus(CrmbusBackend(server.url, source="urn:acme:crm"))):
        event = publish_event(
            event_type="deal.stage_changed",
            data={"deal_id": "d-7", "old_stage": "prospecting", "new_stage": "qualification"},
            metadata={"user_id": "u-1", "ip_address": "192.168.1.1"},
            topics=[deals],
        )
    assert len(event.receipts) == 1
    [stored] = read_all(server, deals)
    assert stored["event"]["source"] == "urn:acme:crm"
    assert stored["event"]["type"] == "deal.stage_changed"


def test_errors_schema_violation_unknown_topic_unreachable(server, make_topic):
    deals = make_topic("deals")
    bus = EventBus(CrmbusBackend(server.url))
    with pytest.raises(SchemaViolation) as info:
        bus.publish(Event("deal.won", {"note": "no id, no amount"}), topics=[deals])
    fields = sorted(e.field for e in info.value.errors)
    assert fields == ["data/amount", "data/deal_id"]
    assert info.value.status == 400 and "data/amount" in str(info.value)
    assert read_all(server, deals) == []

    with pytest.raises(TopicNotFound) as info2:
        bus.publish(Event("deal.updated", {"deal_id": "d"}), topics=[deals, "no-such-topic-x1"])
    assert "no-such-topic-x1" in str(info2.value)
    assert read_all(server, deals) == []  # all or nothing

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    dead = EventBus(CrmbusBackend(f"http://127.0.0.1:{port}", retries=2))
    with pytest.raises(ServerUnreachable) as info3:
        dead.publish(Event("deal.updated", {"deal_id": "d"}), topics=[deals])
    assert f"127.0.0.1:{port}" in str(info3.value)


def test_publish_batch_and_batch_context_manager(server, make_topic):
    deals, notes = make_topic("deals"), make_topic("notifications")
    bus = EventBus(CrmbusBackend(server.url))
    events = [Event("deal.updated", {"deal_id": f"d-{i}", "changed_fields": ["name"]})
              for i in range(5)]
    receipts = bus.publish_batch(events, topics=[deals, notes])
    assert len(receipts) == 10 and {r.topic for r in receipts} == {deals, notes}
    assert len(read_all(server, deals)) == 5

    with use_event_bus(bus):
        with bus.batch() as batch:
            for i in range(3):
                publish_event("deal.created", {"deal_id": f"n-{i}", "name": "x", "amount": "1"},
                              topics=[notes])
            publish_event("deal.deleted", {"deal_id": "n-0", "name": "x"}, topics=[deals])
            assert len(read_all(server, notes)) == 5  # nothing sent yet
        assert len(batch.receipts) == 4
        assert len(read_all(server, notes)) == 8 and len(read_all(server, deals)) == 6
        with pytest.raises(RuntimeError):
            with bus.batch():
                publish_event("deal.created", {"deal_id": "z", "name": "x", "amount": "1"},
                              topics=[notes])
                raise RuntimeError("abandon")
        assert len(read_all(server, notes)) == 8


def test_metadata_round_trips_through_subscribe(server, make_topic, unique):
    deals = make_topic("deals")
    bus = EventBus(CrmbusBackend(server.url))
    seen = []
    sub = bus.subscribe(deals, seen.append, group=unique("meta"))
    metadata = {"user_id": "0b6c3b1e-uuid", "ip_address": "192.168.1.1",
                "company_id": "c-9", "timestamp": "2024-05-01T12:00:00",
                "nested": {"roles": ["admin", "sales"], "mfa": True}, "count": 3}
    sent = bus.publish(Event("deal.stage_changed",
                             {"deal_id": "d-1", "old_stage": "a", "new_stage": "b"},
                             metadata), topics=[deals])
    with ThreadWorker(bus, limit=1) as w:
        assert w.join() == 1
    [got] = seen
    assert got.metadata == metadata
    assert got.data == {"deal_id": "d-1", "old_stage": "a", "new_stage": "b"}
    assert got.id == sent[0].id and got.subject == "d-1" and got.extensions == {}
    assert got.delivery.subscription == sub.name and got.delivery.attempt == 1
    status = server.client.get_subscription(sub.name)["status"]
    assert status["lag"] == 0 and status["acked"] == 1


def test_a_transformation_reaches_the_handler_as_delivery_body(server, make_topic, unique):
    deals = make_topic("deals")
    bus = EventBus(CrmbusBackend(server.url))
    seen = []
    bus.subscribe(deals, seen.append, group=unique("shaped"),
                  transform={"deal": "{{ $.data.deal_id }}", "note": "won: {{ $.data.amount }}"})
    bus.publish(Event("deal.won", {"deal_id": "d-7", "amount": "10.00"}), topics=[deals])
    with ThreadWorker(bus, limit=1) as w:
        assert w.join() == 1
    [got] = seen
    assert got.delivery.body == {"deal": "d-7", "note": "won: 10.00"}
    assert got.data == {"deal_id": "d-7", "amount": "10.00"}


def test_per_subject_order_through_subscribe(server, make_topic, unique):
    deals = make_topic("deals", partitions=2)
    bus = EventBus(CrmbusBackend(server.url))
    seen = []
    lock = threading.Lock()
    running = set()
    overlaps = []

    def handler(event):
        key = event.subject
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
        time.sleep(random.random() / 200)
        with lock:
            running.discard(key)
            seen.append((key, event.data["seq"]))

    bus.subscribe(deals, handler, group=unique("order"))
    subjects = [f"deal-{i}" for i in range(6)]
    events = [Event("deal.updated", {"deal_id": s, "seq": n}) for n in range(15) for s in subjects]
    bus.publish_batch(events, topics=[deals])
    with ThreadWorker(bus, concurrency=8, limit=len(events)) as w:
        assert w.join() == len(events)
    assert overlaps == []
    for s in subjects:
        assert [n for k, n in seen if k == s] == list(range(15)), s


def test_raising_handler_is_retried_then_dead_lettered(server, make_topic, unique):
    deals = make_topic("deals")
    bus = EventBus(CrmbusBackend(server.url))
    attempts = []
    good = []

    def sync_to_erp(event):
        if event.data["deal_id"] == "deal-7":
            attempts.append(event.delivery.attempt)
            raise ValueError(f"ERP refused {event.data['deal_id']}: currency missing")
        good.append(event.data["deal_id"])

    group = unique("erp-sync")
    bus.subscribe(deals, sync_to_erp, group=group, max_attempts=3,
                  retry={"initial_backoff_ms": 20, "max_backoff_ms": 50})
    bus.publish_batch([Event("deal.won", {"deal_id": d, "amount": "10.00"})
                       for d in ("deal-6", "deal-7", "deal-8")], topics=[deals])
    with ThreadWorker(bus, concurrency=2, limit=5) as w:
        assert w.join() == 5  # two good events, three attempts of the bad one
    assert attempts == [1, 2, 3]
    assert sorted(good) == ["deal-6", "deal-8"]
    entries = wait_for(lambda: server.cli_json("dlq", "list", group)
                       if server.client.get_subscription(group)["status"]["dlq_size"] else None,
                       "the dead letter is listed")
    entries = entries.get("entries", entries) if isinstance(entries, dict) else entries
    [entry] = entries
    assert entry["attempts"] == 3
    assert "ValueError: ERP refused deal-7: currency missing" in entry["last_error"]
    assert entry["event"]["data"]["deal_id"] == "deal-7"
    text = server.cli("dlq", "list", group).stdout
    assert "ERP refused deal-7" in text


def test_async_handlers_through_the_worker(server, make_topic, unique):
    leads = make_topic("leads")
    bus = EventBus(CrmbusBackend(server.url))
    seen = []
    loops = set()

    async def score_lead(event):
        await asyncio.sleep(0.001)
        loops.add(id(asyncio.get_running_loop()))
        seen.append(event.data["lead_id"])

    async def flaky(event):
        if event.delivery.attempt == 1:
            raise RuntimeError("first try fails")
        seen.append(("retried", event.data["lead_id"]))

    bus.subscribe(leads, score_lead, group=unique("scoring"))
    bus.subscribe(leads, flaky, group=unique("flaky"), retry={"initial_backoff_ms": 10})
    for i in range(4):
        publish_event("lead.created", {"lead_id": f"l-{i}", "name": "n", "source": "web"},
                      topics=[leads], bus=bus)
    with ThreadWorker(bus, concurrency=4, limit=12) as w:
        assert w.join() == 12  # 4 scored, 4 failed once, 4 retried
    assert sorted(x for x in seen if isinstance(x, str)) == [f"l-{i}" for i in range(4)]
    assert sorted(x[1] for x in seen if isinstance(x, tuple)) == [f"l-{i}" for i in range(4)]
    assert len(loops) == 1


def test_subscribe_before_the_worker_runs_keeps_events_and_unsubscribe(server, make_topic, unique):
    deals = make_topic("deals")
    bus = EventBus(CrmbusBackend(server.url))
    seen = []

    def handle(event):
        seen.append(event.id)

    group = unique("later")
    sub = bus.subscribe(deals, handle, group=group)
    # Published while no worker runs: the durable subscription keeps it.
    e = bus.publish(Event("deal.created", {"deal_id": "d", "name": "n", "amount": "1"}),
                    topics=[deals])
    assert server.client.get_subscription(group)["status"]["lag"] == 1
    # The same group in another bus (another process) joins the same subscription.
    other = EventBus(CrmbusBackend(server.url))
    other.subscribe(deals, handle, group=group)
    with ThreadWorker(other, limit=1) as w:
        assert w.join() == 1
    assert seen == [e[0].id]
    bus.unsubscribe(deals, handle)
    assert sub.name not in bus.subscriptions and "deals" not in bus._subscribers
    assert server.client.get_subscription(group)["name"] == group  # kept on the server
    other.unsubscribe(deals, handle, delete=True)
    with pytest.raises(SubscriptionNotFound):
        server.client.get_subscription(group)
