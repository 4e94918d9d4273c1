"""The transactional outbox, on Django's database connection.

The table's contract (``crmbus_outbox``, see ``outbox.sql``): one row per event, ``topics``
(``text[]``) and ``event`` (``jsonb``, a structured CloudEvent with ``id``, ``source``,
``type`` and ``subject`` for per-entity order), inserted in the application's transaction;
``crmbus outbox relay`` publishes committed rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from crmbus.event import Event, JSONEncoder

if TYPE_CHECKING:  # pragma: no cover
    from crmbus.bus import EventBus

OUTBOX_SQL_PATH = Path(__file__).with_name("outbox.sql")


def outbox_sql() -> str:
    """The SQL that creates the outbox table (the same as ``crmbus outbox sql``)."""
    return OUTBOX_SQL_PATH.read_text()


def write_outbox(
    event: Event | dict[str, Any], topics: Sequence[str] | None, using: str | None = None
) -> int:
    """Inserts the event into ``crmbus_outbox`` on the connection ``using`` (default
    database), in whatever transaction is open there; returns the row's id."""
    from django.db import DEFAULT_DB_ALIAS, connections

    ce = event.to_cloudevent_dict() if isinstance(event, Event) else dict(event)
    topic_list = list(topics) if topics else ["default"]
    connection = connections[using or DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql":
        raise RuntimeError(
            f"the crmbus outbox needs PostgreSQL; database {using or DEFAULT_DB_ALIAS!r} "
            f"is {connection.vendor}"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crmbus_outbox (topics, event) VALUES (%s, %s::jsonb) RETURNING id",
            [topic_list, json.dumps(ce, cls=JSONEncoder)],
        )
        row = cursor.fetchone()
    return int(row[0])


def publish_transactional(
    bus: EventBus, event: Event, topics: Sequence[str] | None, using: str | None = None
) -> None:
    """Publishes ``event`` if and only if the current transaction on ``using`` commits.

    With ``CrmbusBackend`` (or any backend that does not deliver in process) the event goes
    to the outbox table in the transaction; with an in-process backend (InMemory, Logging,
    NoOp, custom) it is published by ``transaction.on_commit``.
    """
    from django.db import transaction

    topic_list = list(topics) if topics else ["default"]
    if not bus.backend.delivers_in_process:
        wire = getattr(bus.backend, "_wire", None)
        ce = wire(event) if wire is not None else event.to_cloudevent_dict()
        write_outbox(ce, topic_list, using=using)
        return
    transaction.on_commit(lambda: bus.publish(event, topic_list), using=using)
