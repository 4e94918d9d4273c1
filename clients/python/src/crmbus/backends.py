"""Event backends: where :meth:`EventBus.publish` sends events.

``NoOpEventBackend``, ``LoggingEventBackend`` and ``InMemoryEventBackend`` behave as in
``core.events`` (the bus then calls the topic's subscribers in process);
``CrmbusBackend`` stores events durably in a crmbus server, and subscribers receive them
through durable pull subscriptions that a worker (``bus.run()``, ``crmbus-worker``)
consumes. A custom backend subclasses :class:`EventBackend` and implements ``publish``.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Mapping, Sequence

from crmbus import _settings
from crmbus.errors import Conflict, CrmbusError
from crmbus.event import Event, JSONEncoder
from crmbus.http import Client, Receipt

logger = logging.getLogger("crmbus.events")


class EventBackend:
    """Base class of backends: implement ``publish(event, topics=None)``.

    ``delivers_in_process`` says whether the bus calls subscribers itself after a publish
    (true for every backend but :class:`CrmbusBackend`, whose subscribers are fed by a
    worker from durable subscriptions).
    """

    delivers_in_process: bool = True

    def publish(self, event: Event, topics: Sequence[str] | None = None) -> Any:
        raise NotImplementedError

    def publish_batch(self, events: Sequence[Event], topics: Sequence[str] | None = None) -> Any:
        """Publishes several events; the default publishes them one by one."""
        results = []
        for event in events:
            results.append(self.publish(event, topics))
        return results

    def flush(self) -> None:
        """Sends whatever the backend buffers (nothing by default)."""

    def close(self) -> None:
        """Releases connections (nothing by default)."""


class NoOpEventBackend(EventBackend):
    """The default: logs each event at DEBUG and publishes nothing."""

    def publish(self, event: Event, topics: Sequence[str] | None = None) -> None:
        logger.debug(
            "Event (not published, NoOp backend): %s | Topics: %s",
            event.event_type,
            ", ".join(topics or ["default"]),
        )


class LoggingEventBackend(EventBackend):
    """Logs each event to the ``crmbus.events`` logger at ``log_level``:
    ``Event: deal.stage_changed | Topics: deals, notifications | Data: {...}``."""

    def __init__(self, log_level: str | int = "INFO") -> None:
        self.log_level = (
            log_level if isinstance(log_level, int) else logging.getLevelName(log_level.upper())
        )
        if not isinstance(self.log_level, int):
            raise ValueError(f"unknown log level {log_level!r}")

    def publish(self, event: Event, topics: Sequence[str] | None = None) -> None:
        logger.log(
            self.log_level,
            "Event: %s | Topics: %s | Data: %s",
            event.event_type,
            ", ".join(topics or ["default"]),
            json.dumps(event.data, cls=JSONEncoder),
        )


class InMemoryEventBackend(EventBackend):
    """Keeps published events in memory, for tests: ``get_events(event_type=None)`` and
    ``clear()``; ``published`` holds ``(event, topics)`` pairs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published: list[tuple[Event, list[str]]] = []

    def publish(self, event: Event, topics: Sequence[str] | None = None) -> None:
        with self._lock:
            self.published.append((event, list(topics or ["default"])))

    def get_events(self, event_type: str | None = None, topic: str | None = None) -> list[Event]:
        """The events published so far, oldest first; of one type and/or topic if given."""
        with self._lock:
            return [
                e
                for e, topics in self.published
                if (event_type is None or e.event_type == event_type)
                and (topic is None or topic in topics)
            ]

    def clear(self) -> None:
        """Forgets every event."""
        with self._lock:
            self.published.clear()


class CrmbusBackend(EventBackend):
    """Publishes to a crmbus server: ``publish`` returns once crmbus has stored the event
    durably, with its receipts (one per topic).

    ``url``, ``api_key``, ``ca_cert`` and ``source`` default to the ``CRMBUS_URL``,
    ``CRMBUS_API_KEY``, ``CRMBUS_CA_CERT`` (PEM certificates to trust for an https://
    server with a self-signed certificate) and ``CRMBUS_SOURCE`` settings (Django
    settings, else environment variables).
    ``retries``: how often a publish is tried again when the server cannot be reached or
    answers 502/503/504 (the same event id, so the server stores it once).
    """

    delivers_in_process = False

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        ca_cert: str | None = None,
        source: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
    ) -> None:
        self.url: str = (url or _settings.get("CRMBUS_URL") or "http://127.0.0.1:7480").rstrip(
            "/"
        )
        self.api_key: str | None = api_key or _settings.get("CRMBUS_API_KEY")
        self.ca_cert: str | None = ca_cert or _settings.get("CRMBUS_CA_CERT")
        self.source = source
        self.timeout = timeout
        self.retries = retries
        self._client: Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Client:
        """The HTTP client (made on first use)."""
        with self._lock:
            if self._client is None:
                self._client = Client(
                    self.url,
                    api_key=self.api_key,
                    ca_cert=self.ca_cert,
                    timeout=self.timeout,
                    retries=self.retries,
                )
            return self._client

    def _wire(self, event: Event) -> dict[str, Any]:
        if self.source and event.source != self.source and event.delivery is None:
            # An explicit backend source wins over the process default.
            from crmbus.event import default_source

            if event.source == default_source():
                event.source = self.source
        return event.to_cloudevent_dict()

    def publish(self, event: Event, topics: Sequence[str] | None = None) -> list[Receipt]:
        return self.client.publish(self._wire(event), list(topics or ["default"]))

    def publish_batch(
        self, events: Sequence[Event], topics: Sequence[str] | None = None
    ) -> list[Receipt]:
        receipts: list[Receipt] = []
        chunk = 500
        wire = [self._wire(e) for e in events]
        for i in range(0, len(wire), chunk):
            receipts.extend(self.client.publish_batch(wire[i : i + chunk], list(topics or ["default"])))
        return receipts

    def ensure_subscription(self, topic: str, name: str, options: Mapping[str, Any]) -> Any:
        """Creates the durable subscription ``name`` on ``topic`` unless it exists; a
        subscription of that name on another topic is a :class:`Conflict`."""
        body = {"name": name, **{k: v for k, v in options.items() if v is not None}}
        try:
            return self.client.create_subscription(topic, body)
        except CrmbusError as err:
            if err.status != 409:
                raise
        existing = self.client.get_subscription(name)
        if existing.get("topic") != topic:
            raise Conflict(
                f"subscription {name!r} already exists on topic {existing.get('topic')!r}, "
                f"not {topic!r}: give this handler another group",
                status=409,
                code="subscription_exists",
            )
        return existing

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
