"""A real Django project (tests/djangoproject) on PostgreSQL with crmbus as its bus:

- a Deal saved inside ``transaction.atomic()``, whose post_save receiver calls
  ``publish_event(..., transactional=True)``, reaches its topic through
  ``crmbus outbox relay`` once the transaction commits (not before);
- a rolled-back transaction publishes nothing;
- ``manage.py crmbus_worker deals.events`` consumes the events (metadata included);
- with an in-process backend, ``transactional=True`` publishes on commit only.

The database is made for the run (``crmbus_pytest_<random>`` on 127.0.0.1:5432, user
postgres) and dropped after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal

import psycopg
import pytest

from crmbus import EventBus, InMemoryEventBackend, publish_event, set_event_bus

from conftest import CRMBUS_BIN, TESTS, wait_for

PROJECT = TESTS / "djangoproject"
PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(scope="module")
def django_project(server):
    """Django set up in this process on a new database, migrated (the deals table and
    crmbus's outbox table); the database is dropped and Django's settings unconfigured
    afterwards."""
    name = f"crmbus_pytest_{uuid.uuid4().hex[:12]}"
    topic = f"deals-{uuid.uuid4().hex[:10]}"
    server.client.create_topic(topic, 4)
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    previous_bus = set_event_bus(None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRMBUS_TEST_DB", name)
        mp.setenv("CRMBUS_URL", server.url)
        mp.setenv("DEALS_TOPIC", topic)
        mp.setenv("DJANGO_SETTINGS_MODULE", "crm_site.settings")
        mp.syspath_prepend(str(PROJECT))
        import django
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections
        from django.utils.functional import empty

        try:
            django.setup()
            call_command("migrate", verbosity=0)
            yield {"db": name, "topic": topic}
        finally:
            connections.close_all()
            set_event_bus(previous_bus)
            settings._wrapped = empty  # later tests see no Django settings
            with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            server.client.delete_topic(topic)


def topic_events(server, topic):
    events = []
    for p in server.client.get_topic(topic)["partition_info"]:
        answer = server.client.read_events(topic, partition=p["partition"], limit=1000)
        events.extend(e["event"] for e in answer["events"])
    return events


def test_transactional_publish_goes_through_the_outbox_relay(django_project, server, tmp_path,
                                                              unique):
    from django.db import connection, transaction

    from deals.models import Deal

    topic, db = django_project["topic"], django_project["db"]
    database_url = f"{PG}/{db}"
    # The crmbus CLI's own init on the same database: it and the Django migration agree.
    subprocess.run([CRMBUS_BIN, "outbox", "init", "--database-url", database_url],
                   check=True, capture_output=True, timeout=60)
    relay_log = open(tmp_path / "relay.log", "wb")
    relay = subprocess.Popen(
        [CRMBUS_BIN, "outbox", "relay", "--database-url", database_url, "--url", server.url],
        stdout=relay_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        with transaction.atomic():
            won = Deal.objects.create(name="ACME renewal", amount=Decimal("1250.00"))
            with connection.cursor() as c:
                c.execute("SELECT count(*) FROM crmbus_outbox WHERE event->>'subject' = %s",
                          [str(won.id)])
                assert c.fetchone()[0] == 1  # written in this transaction
            assert topic_events(server, topic) == []  # and not published before the commit
        wait_for(lambda: topic_events(server, topic), "the committed deal reaches its topic")
        [event] = topic_events(server, topic)
        assert event["type"] == "deal.created" and event["subject"] == str(won.id)
        assert event["source"] == "urn:acme:crm"
        assert event["data"] == {"deal_id": str(won.id), "name": "ACME renewal",
                                 "amount": "1250.00"}

        with pytest.raises(RuntimeError):
            with transaction.atomic():
                lost = Deal.objects.create(name="Rolled back", amount=Decimal("1.00"))
                raise RuntimeError("the view failed after the save")
        assert not Deal.objects.filter(id=lost.id).exists()

        with transaction.atomic():
            won.stage = "won"
            won.save()  # deal.updated, same subject: after deal.created
        wait_for(lambda: len(topic_events(server, topic)) >= 2, "the update reaches its topic")
        events = topic_events(server, topic)
        assert [(e["type"], e["subject"]) for e in events] == [
            ("deal.created", str(won.id)), ("deal.updated", str(won.id))]
        assert all(e["subject"] != str(lost.id) for e in events)
        with connection.cursor() as c:
            c.execute("SELECT count(*), count(published_at) FROM crmbus_outbox")
            assert c.fetchone() == (2, 2)

        # The worker, as a management command, consumes them (metadata included).
        handled = tmp_path / "handled.txt"
        env = {**os.environ, "HANDLED_FILE": str(handled), "WORKER_GROUP": unique("dj-worker")}
        done = subprocess.run(
            [sys.executable, "manage.py", "crmbus_worker", "deals.events", "--limit", "2"],
            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert handled.read_text().splitlines() == [
            f"deal.created {won.id} u-1", f"deal.updated {won.id} u-1"]
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=30)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
        relay_log.close()


def test_transactional_with_an_in_process_backend_publishes_on_commit(django_project):
    from django.db import transaction

    backend = InMemoryEventBackend()
    previous = set_event_bus(EventBus(backend))
    try:
        with transaction.atomic():
            publish_event("deal.won", {"deal_id": "d-1", "amount": "5.00"},
                          topics=["deals"], transactional=True)
            assert backend.get_events() == []
        assert [e.data["deal_id"] for e in backend.get_events("deal.won")] == ["d-1"]
        with pytest.raises(ValueError):
            with transaction.atomic():
                publish_event("deal.won", {"deal_id": "d-2", "amount": "5.00"},
                              topics=["deals"], transactional=True)
                raise ValueError("rollback")
        assert len(backend.get_events()) == 1
    finally:
        set_event_bus(previous)
