"""The :class:`Event`: ``core.events``'s ``Event(event_type, data, metadata)`` with the
CloudEvents identity crmbus stores (``id``, ``source``, ``time``, ``subject``).

How an Event maps onto a CloudEvent (and back):

============== ===========================================================================
Event          CloudEvent (structured JSON)
============== ===========================================================================
event_type     ``type``
data           ``data`` (JSON; UUID, Decimal, datetime, date are written as strings)
metadata       the ``metadata`` extension attribute: the dict as a JSON string. CloudEvents
               extension names are lower-case letters and digits and their values strings,
               numbers or booleans, so a dict with keys such as ``user_id`` is carried as
               one attribute holding its JSON text; ``Event.from_cloudevent`` parses it back
               into the same dict. The values ``user_id``, ``company_id``,
               ``correlation_id``, ``causation_id`` and ``traceparent``, when strings, are
               also copied into the attributes ``userid``, ``companyid``,
               ``correlationid``, ``causationid`` and ``traceparent`` (the names crmbus's
               filters and tools know); the ``metadata`` attribute stays the source of truth.
id             ``id`` (a UUIDv7-like time-ordered UUID when not given)
source         ``source`` (``CRMBUS_SOURCE``, else ``CRMBUS_EVENT_SOURCE``, else
               ``urn:crmbus:python``)
time           ``time`` (now, UTC, when not given)
subject        ``subject``: when not given, the data's business key (below)
extensions     every other extension attribute
============== ===========================================================================

The subject (the business key that orders one entity's events and picks their partition)
defaults to ``data["<entity>_id"]`` where ``<entity>`` is the event type's first segment
(``deal.won`` -> ``deal_id``), else ``data["id"]``, else the first ``*_id`` field of the
data, else none.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import os
import re
import secrets
import time as _time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from cloudevents.core.base import BaseCloudEvent

DEFAULT_SOURCE = "urn:crmbus:python"
METADATA_ATTRIBUTE = "metadata"
_MIRRORED = {
    "user_id": "userid",
    "company_id": "companyid",
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "traceparent": "traceparent",
}
_CORE = {
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
}
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")

_source_override: str | None = None


def set_default_source(source: str | None) -> None:
    """Sets the ``source`` of events built without one (``None``: back to the settings)."""
    global _source_override
    _source_override = source


def default_source() -> str:
    """The ``source`` of events built without one: :func:`set_default_source`, else Django's
    ``CRMBUS_SOURCE`` setting, else the ``CRMBUS_SOURCE`` or ``CRMBUS_EVENT_SOURCE``
    environment variable, else ``urn:crmbus:python``."""
    if _source_override:
        return _source_override
    from crmbus import _settings

    return (
        _settings.get("CRMBUS_SOURCE")
        or os.environ.get("CRMBUS_EVENT_SOURCE")
        or DEFAULT_SOURCE
    )


def new_event_id() -> str:
    """A UUIDv7 (time-ordered, random): unique per source, sortable by creation."""
    ms = _time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


class JSONEncoder(json.JSONEncoder):
    """JSON with the types CRM code puts in events: UUID, Decimal, datetime, date, time
    (as strings, like Django's ``DjangoJSONEncoder``), sets and tuples (as lists)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, uuid.UUID):
            return str(o)
        if isinstance(o, decimal.Decimal):
            return str(o)
        if isinstance(o, _dt.datetime):
            return o.isoformat()
        if isinstance(o, (_dt.date, _dt.time)):
            return o.isoformat()
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        return super().default(o)


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON types (what a consumer will see)."""
    return json.loads(json.dumps(value, cls=JSONEncoder))


def business_key(event_type: str, data: Any) -> str | None:
    """The subject crmbus orders by, taken from the data: ``<entity>_id`` of the type's
    entity, else ``id``, else the first ``*_id`` field."""
    if not isinstance(data, Mapping):
        return None
    entity = event_type.split(".", 1)[0]
    for key in (f"{entity}_id", "id"):
        value = data.get(key)
        if value is not None and value != "":
            return str(value)
    for key, value in data.items():
        if isinstance(key, str) and key.endswith("_id") and value is not None and value != "":
            return str(value)
    return None


def _parse_time(value: Any) -> _dt.datetime | None:
    if value is None or isinstance(value, _dt.datetime):
        return value
    text = str(value)
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    # Python < 3.11 parses at most 6 fractional digits.
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", text)
    if m:
        text = f"{m.group(1)}.{m.group(2)[:6].ljust(6, '0')}{m.group(3)}"
    return _dt.datetime.fromisoformat(text)


def _format_time(value: _dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Delivery:
    """How a worker received an event: its subscription, ``attempt`` (1 for the first
    delivery), ``partition`` and ``offset``, the ``ack_id`` of its lease, and ``body``:
    the event shaped by the subscription's ``transform`` (``None`` without one)."""

    subscription: str
    topic: str
    ack_id: str
    attempt: int
    partition: int
    offset: int
    body: Any = None


class Event:
    """An application event: ``Event(event_type, data, metadata)``, as in ``core.events``,
    with the CloudEvents identity crmbus stores.

    ``Event('deal.won', {'deal_id': 'd-1', 'amount': '10.00'}, {'user_id': 'u-1'})``
    gets a new ``id``, the default ``source``, ``time`` = now and ``subject`` = ``'d-1'``.
    """

    def __init__(
        self,
        event_type: str,
        data: Any = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        source: str | None = None,
        time: _dt.datetime | str | None = None,
        subject: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
    ) -> None:
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("event_type must be a non-empty string, such as 'deal.won'")
        self.event_type: str = event_type
        self.data: Any = {} if data is None else data
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.id: str = id or new_event_id()
        self.source: str = source or default_source()
        parsed = _parse_time(time)
        self.time: _dt.datetime = parsed or _dt.datetime.now(_dt.timezone.utc)
        self.subject: str | None = (
            subject if subject is not None else business_key(event_type, self.data)
        )
        self.extensions: dict[str, Any] = dict(extensions or {})
        self.datacontenttype = datacontenttype
        self.dataschema = dataschema
        #: Set on events a worker hands to a handler.
        self.delivery: Delivery | None = None
        #: The receipts of its publish, when the backend gave them (CrmbusBackend).
        self.receipts: list[Any] = []

    # --- core.events compatibility -------------------------------------------------------

    @property
    def timestamp(self) -> _dt.datetime:
        """When the event happened (the CloudEvents ``time``)."""
        return self.time

    @property
    def attempt(self) -> int:
        """1 for an event published in process or delivered the first time; the delivery's
        attempt for an event a worker received again."""
        return self.delivery.attempt if self.delivery else 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``event_type``, ``data``, ``metadata``, ``timestamp`` (as in
        ``core.events``) plus ``id``, ``source`` and ``subject``."""
        return {
            "id": self.id,
            "event_type": self.event_type,
            "data": to_json_value(self.data),
            "metadata": to_json_value(self.metadata),
            "timestamp": _format_time(self.time),
            "source": self.source,
            "subject": self.subject,
        }

    # --- CloudEvents ---------------------------------------------------------------------

    def to_cloudevent_dict(self) -> dict[str, Any]:
        """The structured-mode CloudEvent (JSON-ready) crmbus stores."""
        ce: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.event_type,
            "time": _format_time(self.time),
        }
        if self.subject is not None:
            ce["subject"] = str(self.subject)
        if self.datacontenttype:
            ce["datacontenttype"] = self.datacontenttype
        if self.dataschema:
            ce["dataschema"] = self.dataschema
        for name, value in self.extensions.items():
            if not _EXTENSION_NAME.match(name) or name in _CORE:
                raise ValueError(
                    f"extension attribute {name!r}: CloudEvents extension names are 1-20 "
                    "lower-case letters and digits, other than the core attributes"
                )
            ce[name] = value
        if self.metadata:
            ce[METADATA_ATTRIBUTE] = json.dumps(
                self.metadata, cls=JSONEncoder, separators=(",", ":"), sort_keys=True
            )
            for key, attribute in _MIRRORED.items():
                value = self.metadata.get(key)
                if isinstance(value, (str, uuid.UUID)) and attribute not in ce:
                    ce[attribute] = str(value)
        if self.data is not None:
            ce["data"] = to_json_value(self.data)
        return ce

    @classmethod
    def from_cloudevent_dict(cls, ce: Mapping[str, Any]) -> Event:
        """The Event of a structured-mode CloudEvent (as crmbus returns them)."""
        raw_metadata = ce.get(METADATA_ATTRIBUTE)
        metadata: dict[str, Any] = {}
        mirrored: set[str] = set()
        if isinstance(raw_metadata, str):
            try:
                parsed = json.loads(raw_metadata)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                metadata = parsed
                mirrored = {
                    attribute
                    for key, attribute in _MIRRORED.items()
                    if isinstance(metadata.get(key), str) and ce.get(attribute) == metadata[key]
                }
        extensions = {
            k: v
            for k, v in ce.items()
            if k not in _CORE and k not in mirrored and not (k == METADATA_ATTRIBUTE and metadata)
        }
        if "data" in ce:
            data = ce["data"]
        elif "data_base64" in ce:
            import base64

            data = base64.b64decode(ce["data_base64"])
        else:
            data = None
        event = cls(
            str(ce["type"]),
            data,
            metadata,
            id=str(ce["id"]),
            source=str(ce["source"]),
            time=ce.get("time"),
            extensions=extensions,
            datacontenttype=ce.get("datacontenttype"),
            dataschema=ce.get("dataschema"),
        )
        # What was stored, not what the data would suggest.
        subject = ce.get("subject")
        event.subject = None if subject is None else str(subject)
        return event

    def to_cloudevent(self) -> BaseCloudEvent:
        """This event as the official ``cloudevents`` SDK's event
        (``cloudevents.core.v1.event.CloudEvent``)."""
        from cloudevents.core.v1.event import CloudEvent

        ce = self.to_cloudevent_dict()
        data = ce.pop("data", None)
        ce["time"] = self.time if self.time.tzinfo else self.time.replace(tzinfo=_dt.timezone.utc)
        if data is not None and "datacontenttype" not in ce:
            ce["datacontenttype"] = "application/json"
        return CloudEvent(ce, data)

    @classmethod
    def from_cloudevent(cls, event: Any) -> Event:
        """The Event of an SDK CloudEvent: the ``cloudevents.core`` event (``get_attributes``
        and ``get_data``) or the legacy ``cloudevents.v1``/``cloudevents.http`` one."""
        if hasattr(event, "get_attributes"):
            attributes = dict(event.get_attributes())
        else:  # the legacy SDK event is a mapping of its attributes
            attributes = {k: event[k] for k in event}
        data = event.get_data() if hasattr(event, "get_data") else getattr(event, "data", None)
        if isinstance(attributes.get("time"), _dt.datetime):
            attributes["time"] = _format_time(attributes["time"])
        if data is not None:
            attributes["data"] = data
        if attributes.get("datacontenttype") == "application/json":
            attributes.pop("datacontenttype")
        return cls.from_cloudevent_dict(attributes)

    # --- niceties ------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.to_cloudevent_dict() == other.to_cloudevent_dict()

    def __hash__(self) -> int:
        return hash((self.source, self.id))

    def __repr__(self) -> str:
        return (
            f"Event({self.event_type!r}, {self.data!r}, {self.metadata!r}, id={self.id!r}, "
            f"subject={self.subject!r})"
        )
