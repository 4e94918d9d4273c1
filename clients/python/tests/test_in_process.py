"""The core.events verbs with the in-process backends, the Event and its CloudEvents
conversions, the process-wide bus and the settings. No server needed."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import logging
import uuid

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import crmbus
import crmbus.bus
from crmbus import (
    Event,
    EventBackend,
    EventBus,
    InMemoryEventBackend,
    LoggingEventBackend,
    NoOpEventBackend,
    get_event_bus,
    publish_event,
    set_event_bus,
)
from crmbus.testing import use_event_bus


def test_top_level_names_match_core_events():
    for name in ["Event", "EventBus", "EventBackend", "NoOpEventBackend",
                 "LoggingEventBackend", "InMemoryEventBackend", "CrmbusBackend",
                 "publish_event", "get_event_bus", "set_event_bus"]:
        assert hasattr(crmbus, name), name


def test_event_identity_and_subject_from_business_key():
    e = Event("deal.stage_changed",
              {"deal_id": "d-42", "old_stage": "prospecting", "new_stage": "qualification"},
              {"user_id": "u-1", "ip_address": "192.168.1.1"})
    assert e.event_type == "deal.stage_changed"
    assert e.subject == "d-42"
    assert e.source == "urn:crmbus:python"
    assert uuid.UUID(e.id).version == 7
    assert e.time.tzinfo is not None and e.timestamp == e.time
    # lead.converted carries lead_id and account_id: the lead is the entity.
    assert Event("lead.converted", {"account_id": 7, "lead_id": 3}).subject == "3"
    assert Event("account.merged", {"source_id": "a", "target_id": "b"}).subject == "a"
    assert Event("test.event", {"key": "value"}).subject is None
    assert Event("deal.won", {"deal_id": "x"}, subject="other").subject == "other"
    d = e.to_dict()
    assert d["event_type"] == "deal.stage_changed"
    assert d["metadata"] == {"user_id": "u-1", "ip_address": "192.168.1.1"}
    assert d["data"]["deal_id"] == "d-42" and d["id"] == e.id and d["subject"] == "d-42"
    json.dumps(d)


def test_data_types_of_crm_code_are_encoded():
    deal_id = uuid.uuid4()
    e = Event("deal.won", {"deal_id": deal_id, "amount": decimal.Decimal("1250.00"),
                           "close_date": dt.date(2024, 5, 1)},
              {"timestamp": dt.datetime(2024, 5, 1, 12, 0)})
    ce = e.to_cloudevent_dict()
    assert ce["subject"] == str(deal_id)
    assert ce["data"] == {"deal_id": str(deal_id), "amount": "1250.00",
                          "close_date": "2024-05-01"}
    assert json.loads(ce["metadata"]) == {"timestamp": "2024-05-01T12:00:00"}


def test_metadata_encoding_in_the_cloudevent():
    e = Event("deal.won", {"deal_id": "d-1", "amount": "1"},
              {"user_id": "u-1", "company_id": "c-9", "ip_address": "10.0.0.1"})
    ce = e.to_cloudevent_dict()
    # One extension attribute holds the dict as JSON; well-known ids are mirrored.
    assert json.loads(ce["metadata"]) == e.metadata
    assert ce["userid"] == "u-1" and ce["companyid"] == "c-9"
    back = Event.from_cloudevent_dict(json.loads(json.dumps(ce)))
    assert back.metadata == e.metadata
    assert back.extensions == {}
    assert back == e


def test_cloudevents_sdk_round_trip():
    e = Event("lead.created", {"lead_id": "l-1", "name": "Ada", "source": "web"},
              {"user_id": "u-1"}, extensions={"traceparent": "00-abc-def-01"})
    ce = e.to_cloudevent()
    assert isinstance(ce, CloudEvent)
    assert ce.get_type() == "lead.created" and ce.get_id() == e.id
    assert ce.get_subject() == "l-1"
    assert json.loads(ce.get_extension("metadata")) == {"user_id": "u-1"}
    # Through the SDK's own structured HTTP encoding and back.
    message = ce_http.to_structured(ce, JSONFormat())
    parsed = ce_http.from_structured(message, JSONFormat())
    back = Event.from_cloudevent(parsed)
    assert back.event_type == e.event_type and back.id == e.id and back.source == e.source
    assert back.data == e.data and back.metadata == e.metadata
    assert back.subject == "l-1" and back.extensions == {"traceparent": "00-abc-def-01"}
    # An SDK event made by someone else.
    other = CloudEvent({"type": "deal.lost", "source": "urn:other", "subject": "d-9",
                        "reason": "price"}, {"deal_id": "d-9", "reason": "price"})
    ev = Event.from_cloudevent(other)
    assert ev.event_type == "deal.lost" and ev.source == "urn:other"
    assert ev.extensions == {"reason": "price"} and ev.metadata == {}


def test_noop_backend_publishes_nothing_and_calls_subscribers():
    bus = EventBus(NoOpEventBackend())
    seen = []
    bus.subscribe("deals", seen.append)
    e = Event("deal.updated", {"deal_id": "d-1", "changed_fields": ["name"]})
    bus.publish(e, topics=["deals", "notifications"])
    assert seen == [e]
    assert EventBus().backend.__class__ is NoOpEventBackend


def test_logging_backend_logs_the_documented_line(caplog):
    bus = EventBus(LoggingEventBackend(log_level="INFO"))
    with caplog.at_level(logging.INFO, logger="crmbus.events"):
        bus.publish(Event("deal.stage_changed", {"deal_id": "d-1"}),
                    topics=["deals", "notifications"])
    assert ('Event: deal.stage_changed | Topics: deals, notifications | '
            'Data: {"deal_id": "d-1"}') in caplog.text


def test_in_memory_backend_get_events_and_clear():
    backend = InMemoryEventBackend()
    bus = EventBus(backend)
    a = Event("deal.stage_changed", {"deal_id": "d-1"})
    b = Event("deal.won", {"deal_id": "d-1", "amount": "5"})
    bus.publish(a)
    bus.publish(b, topics=["deals", "sales"])
    assert backend.get_events() == [a, b]
    assert backend.get_events("deal.stage_changed") == [a]
    assert backend.get_events(topic="sales") == [b]
    assert backend.get_events(topic="default") == [a]
    backend.clear()
    assert backend.get_events() == []


def test_subscribe_unsubscribe_sync_and_async_handlers_in_process():
    bus = EventBus(InMemoryEventBackend())
    calls = []

    def handle_deal_stage_change(event):
        calls.append(("sync", event.data["deal_id"]))

    async def async_event_handler(event):
        await asyncio.sleep(0)
        calls.append(("async", event.data["deal_id"]))

    def failing(event):
        raise RuntimeError("subscriber bug")

    bus.subscribe("deals", failing)
    bus.subscribe("deals", handle_deal_stage_change)
    bus.subscribe("deals", async_event_handler)
    assert len(bus._subscribers.get("deals", [])) == 3
    # Outside an event loop: the async handler runs to completion.
    bus.publish(Event("deal.stage_changed", {"deal_id": "d-1"}), topics=["deals"])
    assert calls == [("sync", "d-1"), ("async", "d-1")]

    # Inside a running loop: it is scheduled on that loop.
    async def main():
        bus.publish(Event("deal.stage_changed", {"deal_id": "d-2"}), topics=["deals"])
        assert calls[-1] == ("sync", "d-2")
        await asyncio.sleep(0.01)
        await asyncio.gather(*bus._tasks)

    asyncio.run(main())
    assert calls[-1] == ("async", "d-2")

    bus.unsubscribe("deals", handle_deal_stage_change)
    bus.unsubscribe("deals", async_event_handler)
    bus.unsubscribe("deals", failing)
    bus.publish(Event("deal.stage_changed", {"deal_id": "d-3"}), topics=["deals"])
    assert len(calls) == 4 and "deals" not in bus._subscribers


def test_publish_event_uses_the_global_bus_and_returns_the_event():
    backend = InMemoryEventBackend()
    with use_event_bus(EventBus(backend)):
        event = publish_event(
            event_type="lead.converted",
            data={"lead_id": 11, "account_id": 12},
            metadata={"user_id": "u-1", "company_id": "c-1",
                      "timestamp": dt.datetime(2024, 1, 1).isoformat()},
            topics=["leads", "conversions"],
        )
    assert backend.get_events("lead.converted") == [event]
    assert backend.published[0][1] == ["leads", "conversions"]
    assert event.subject == "11"


def test_event_bus_fixture_swaps_the_global_bus(event_bus):
    assert get_event_bus() is event_bus
    publish_event("deal.deleted", {"deal_id": "d-1", "name": "x"}, topics=["deals"])
    assert len(event_bus.backend.get_events("deal.deleted")) == 1


def test_documents_integration_test_way_of_replacing_the_global_bus():
    # The document replaces core.events.bus._global_event_bus; crmbus.bus has it too.
    backend = InMemoryEventBackend()
    bus = EventBus(backend)
    original_bus = crmbus.bus._global_event_bus
    crmbus.bus._global_event_bus = bus
    try:
        publish_event("deal.stage_changed", {"deal_id": "d-1"}, topics=["deals"])
        assert len(backend.get_events("deal.stage_changed")) == 1
    finally:
        crmbus.bus._global_event_bus = original_bus


class RecordingBackend(EventBackend):
    """A custom backend, as the document's RedisEventBackend is."""

    published: list = []

    def publish(self, event, topics=None):
        for topic in topics or ["default"]:
            RecordingBackend.published.append((topic, json.dumps(event.to_dict())))


def test_custom_backend_chosen_by_setting(monkeypatch):
    previous = set_event_bus(None)
    try:
        monkeypatch.setenv("EVENT_BUS_BACKEND", f"{__name__}.RecordingBackend")
        bus = get_event_bus()
        assert isinstance(bus.backend, RecordingBackend)
        print(f"Backend: {bus.backend.__class__.__name__}")
        publish_event("contact.bounced", {"contact_id": "c-1", "email": "a@b"})
        topic, body = RecordingBackend.published[-1]
        assert topic == "default" and json.loads(body)["event_type"] == "contact.bounced"
        set_event_bus(None)
        monkeypatch.setenv("EVENT_BUS_BACKEND", "crmbus.InMemoryEventBackend")
        assert isinstance(get_event_bus().backend, InMemoryEventBackend)
        set_event_bus(None)
        monkeypatch.setenv("EVENT_BUS_BACKEND", "crmbus.CrmbusBackend")
        monkeypatch.setenv("CRMBUS_URL", "http://127.0.0.1:7999/")
        backend = get_event_bus().backend
        assert isinstance(backend, crmbus.CrmbusBackend) and backend.url == "http://127.0.0.1:7999"
    finally:
        set_event_bus(previous)


def test_batch_context_manager_in_process():
    backend = InMemoryEventBackend()
    bus = EventBus(backend)
    with bus.batch() as batch:
        bus.publish(Event("task.assigned", {"task_id": "t-1"}), topics=["tasks"])
        bus.publish(Event("task.assigned", {"task_id": "t-2"}), topics=["tasks"])
        assert backend.get_events() == []
        assert len(batch.pending) == 2
    assert [e.data["task_id"] for e in backend.get_events()] == ["t-1", "t-2"]
    with pytest.raises(ValueError):
        with bus.batch():
            bus.publish(Event("task.assigned", {"task_id": "t-3"}), topics=["tasks"])
            raise ValueError("rolled back")
    assert len(backend.get_events()) == 2
