"""The :class:`EventBus`, the process-wide bus (:func:`get_event_bus`,
:func:`set_event_bus`) and :func:`publish_event`.

As in ``core.events``, the global bus lives in ``crmbus.bus._global_event_bus``; tests
should swap it with :func:`set_event_bus` (it returns the previous bus) or the
``event_bus`` pytest fixture rather than by assigning the private name.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from crmbus import _settings
from crmbus.backends import (
    CrmbusBackend,
    EventBackend,
    InMemoryEventBackend,
    LoggingEventBackend,
    NoOpEventBackend,
)
from crmbus.event import Event

logger = logging.getLogger("crmbus.events")

Handler = Callable[[Event], Any]

_ALIASES: dict[str, type[EventBackend]] = {
    "crmbus": CrmbusBackend,
    "noop": NoOpEventBackend,
    "logging": LoggingEventBackend,
    "memory": InMemoryEventBackend,
    "inmemory": InMemoryEventBackend,
}

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def default_group(topic: str, handler: Handler) -> str:
    """The subscription name of a handler subscribed without ``group``:
    ``<topic>.<module>.<qualified name>`` (``deals.myapp.events.on_deal``), so the same
    handler in every process shares one durable cursor."""
    module = getattr(handler, "__module__", None) or "handler"
    qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    qualname = qualname.replace("<locals>", "locals").replace("<lambda>", "lambda")
    name = _NAME_OK.sub("-", f"{topic}.{module}.{qualname}")
    return name[:200]


@dataclass
class Subscription:
    """A durable subscription (consumer group) and the handlers the worker calls for it."""

    name: str
    topic: str
    handlers: list[Handler] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


class Batch:
    """Events collected by :meth:`EventBus.batch`, published together when the ``with``
    block ends without an exception (``receipts`` then holds the receipts)."""

    def __init__(self, bus: EventBus, max_size: int) -> None:
        self.bus = bus
        self.max_size = max_size
        self.pending: list[tuple[Event, list[str]]] = []
        self.receipts: list[Any] = []

    def publish(self, event: Event, topics: Sequence[str] | None = None) -> None:
        self.pending.append((event, list(topics or ["default"])))
        if len(self.pending) >= self.max_size:
            self.flush()

    def flush(self) -> list[Any]:
        """Publishes what is pending: each run of consecutive events for the same topics in
        one request, so order is kept."""
        published: list[Any] = []
        while self.pending:
            topics = self.pending[0][1]
            run = []
            while self.pending and self.pending[0][1] == topics:
                run.append(self.pending.pop(0)[0])
            result = self.bus.publish_batch(run, topics)
            if isinstance(result, list):
                published.extend(result)
        self.receipts.extend(published)
        return published


_current_batch: contextvars.ContextVar[Batch | None] = contextvars.ContextVar(
    "crmbus_batch", default=None
)


class EventBus:
    """Publishes events through a backend and keeps the topics' subscribers.

    ``EventBus(backend)``; ``publish(event, topics=[...])``; ``subscribe(topic, handler)``
    / ``unsubscribe(topic, handler)``. With an in-process backend (NoOp, Logging,
    InMemory, custom) subscribers are called right after each publish, sync handlers
    directly and async ones on the running loop (or ``asyncio.run`` when none runs); a
    handler's exception is logged and does not reach the publisher. With
    :class:`CrmbusBackend`, ``subscribe`` creates a durable subscription on the server and
    ``run()`` consumes it.
    """

    def __init__(self, backend: EventBackend | None = None) -> None:
        self.backend: EventBackend = backend if backend is not None else NoOpEventBackend()
        self._subscribers: dict[str, list[Handler]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._lock = threading.RLock()
        self._worker: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- publish -------------------------------------------------------------------------

    def publish(self, event: Event, topics: Sequence[str] | None = None) -> Any:
        """Publishes ``event`` to ``topics`` (default ``['default']``). With
        :class:`CrmbusBackend` it returns once the event is stored durably, with one receipt
        per topic; inside :meth:`batch` it is queued and published when the batch ends."""
        topic_list = list(topics) if topics else ["default"]
        batch = _current_batch.get()
        if batch is not None and batch.bus is self:
            batch.publish(event, topic_list)
            return []
        result = self.backend.publish(event, topic_list)
        if isinstance(result, list):
            event.receipts = result
        if self.backend.delivers_in_process:
            self._deliver_local(event, topic_list)
        return result

    def publish_batch(self, events: Sequence[Event], topics: Sequence[str] | None = None) -> Any:
        """Publishes several events to ``topics`` in one request (all or nothing with
        :class:`CrmbusBackend`, which returns the receipts, topic-major)."""
        topic_list = list(topics) if topics else ["default"]
        result = self.backend.publish_batch(list(events), topic_list)
        if self.backend.delivers_in_process:
            for event in events:
                self._deliver_local(event, topic_list)
        return result

    @contextmanager
    def batch(self, max_size: int = 500) -> Iterator[Batch]:
        """Collects every ``publish`` (and ``publish_event``) of this bus in the block and
        publishes them together at its end — nothing if the block raises::

            with bus.batch() as batch:
                for deal in deals:
                    publish_event('deal.updated', {'deal_id': deal.id}, topics=['deals'])
            batch.receipts
        """
        current = _current_batch.get()
        if current is not None and current.bus is self:
            yield current  # nested: the outer batch publishes
            return
        b = Batch(self, max_size)
        token = _current_batch.set(b)
        try:
            yield b
        except BaseException:
            b.pending.clear()
            raise
        finally:
            _current_batch.reset(token)
        b.flush()

    def flush(self) -> None:
        """Flushes the backend's own buffer, if it has one."""
        self.backend.flush()

    # --- subscribe -----------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        handler: Handler,
        group: str | None = None,
        *,
        types: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        start: Any = "latest",
        max_attempts: int | None = None,
        retry: Mapping[str, Any] | None = None,
        ordering: str | None = None,
        on_exhausted: str | None = None,
        ack_timeout_ms: int | None = None,
        max_in_flight: int | None = None,
        transform: Mapping[str, Any] | None = None,
    ) -> Subscription:
        """Calls ``handler(event)`` (sync or ``async def``) for the events of ``topic``.

        With :class:`CrmbusBackend` this creates (or joins) the durable subscription
        ``group`` — default :func:`default_group` — on the server now, so events published
        from here on wait for the worker even while none runs; ``bus.run()`` or
        ``crmbus-worker`` then consumes it: ack when the handler returns, nack with the
        exception's text when it raises (the server retries per ``max_attempts`` /
        ``retry``, then dead-letters), one event per ``subject`` at a time
        (``ordering='key'``, the default). ``start`` is where a new subscription begins:
        ``'latest'`` (default), ``'earliest'`` or ``{'time': RFC 3339}``. The other
        arguments are the server's subscription settings; ``transform`` (a JSON template,
        ``{'deal': '{{ $.data.deal_id }}'}``) shapes each delivery, which the handler finds
        as ``event.delivery.body``. Handlers subscribed with the same
        group share its deliveries: an event is acked when all of them returned.
        """
        with self._lock:
            handlers = self._subscribers.setdefault(topic, [])
            handlers.append(handler)
            if self.backend.delivers_in_process:
                return Subscription(name=group or default_group(topic, handler), topic=topic,
                                    handlers=[handler])
            name = group or default_group(topic, handler)
            sub = self.subscriptions.get(name)
            if sub is not None and sub.topic != topic:
                handlers.remove(handler)
                from crmbus.errors import Conflict

                raise Conflict(
                    f"group {name!r} is subscribed to topic {sub.topic!r} already; "
                    f"use another group for {topic!r}",
                    status=409,
                    code="subscription_exists",
                )
            options: dict[str, Any] = {"start": start}
            f: dict[str, Any] = dict(filter or {})
            if types:
                f["types"] = list(types)
            if f:
                options["filter"] = f
            r = dict(retry or {})
            if max_attempts is not None:
                r["max_attempts"] = max_attempts
            if r:
                options["retry"] = r
            options["ordering"] = ordering
            options["on_exhausted"] = on_exhausted
            options["ack_timeout_ms"] = ack_timeout_ms
            options["max_in_flight"] = max_in_flight
            options["transform"] = dict(transform) if transform is not None else None
            if sub is None:
                ensure = getattr(self.backend, "ensure_subscription")
                try:
                    ensure(topic, name, options)
                except BaseException:
                    handlers.remove(handler)
                    raise
                sub = Subscription(name=name, topic=topic, options=options)
                self.subscriptions[name] = sub
            sub.handlers.append(handler)
            return sub

    def unsubscribe(self, topic: str, handler: Handler, *, delete: bool = False) -> None:
        """Stops calling ``handler`` for ``topic``. The server's durable subscription stays
        (its cursor, retries and dead letters are kept for the next worker) unless
        ``delete=True`` and no handler is left in its group."""
        with self._lock:
            handlers = self._subscribers.get(topic, [])
            if handler in handlers:
                handlers.remove(handler)
            if not handlers:
                self._subscribers.pop(topic, None)
            for name, sub in list(self.subscriptions.items()):
                if sub.topic == topic and handler in sub.handlers:
                    sub.handlers.remove(handler)
                    if not sub.handlers:
                        del self.subscriptions[name]
                        if delete:
                            client = getattr(self.backend, "client")
                            client.delete_subscription(name)

    def _deliver_local(self, event: Event, topics: Sequence[str]) -> None:
        for topic in topics:
            for handler in list(self._subscribers.get(topic, [])):
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        self._run_awaitable(result)
                except Exception:
                    logger.exception(
                        "handler %r failed on %s (%s)",
                        getattr(handler, "__qualname__", handler),
                        event.event_type,
                        event.id,
                    )

    def _run_awaitable(self, awaitable: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(_await(awaitable))
            return
        task = loop.create_task(_await(awaitable))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("async handler failed", exc_info=task.exception())

    # --- worker --------------------------------------------------------------------------

    def run(
        self,
        *,
        concurrency: int = 8,
        limit: int | None = None,
        wait_ms: int = 1000,
        install_signal_handlers: bool | None = None,
    ) -> int:
        """Consumes this bus's durable subscriptions until :meth:`stop`, SIGTERM or SIGINT
        (or ``limit`` events handled): up to ``concurrency`` handlers at once per
        subscription. A stop finishes the handlers that run and acks (or nacks) them before
        returning; nothing more is pulled. Returns how many events were handled."""
        from crmbus.worker import Worker

        worker = Worker(self, concurrency=concurrency, limit=limit, wait_ms=wait_ms)
        self._worker = worker
        try:
            return worker.run(install_signal_handlers=install_signal_handlers)
        finally:
            self._worker = None

    async def arun(self, *, concurrency: int = 8, limit: int | None = None, wait_ms: int = 1000) -> int:
        """:meth:`run` on the running event loop (no signal handlers installed)."""
        from crmbus.worker import Worker

        worker = Worker(self, concurrency=concurrency, limit=limit, wait_ms=wait_ms)
        self._worker = worker
        try:
            return await worker.arun()
        finally:
            self._worker = None

    def stop(self) -> None:
        """Asks a running worker to stop (from any thread or a signal handler)."""
        worker = self._worker
        if worker is not None:
            worker.stop()


async def _await(awaitable: Any) -> Any:
    return await awaitable


# --- the process-wide bus ---------------------------------------------------------------

_global_event_bus: EventBus | None = None
_global_lock = threading.Lock()


def backend_from_settings() -> EventBackend:
    """The backend named by ``EVENT_BUS_BACKEND`` (a dotted class path such as
    ``'crmbus.CrmbusBackend'`` or ``'myapp.backends.RedisEventBackend'``, or one of
    ``crmbus``, ``noop``, ``logging``, ``memory``); ``EVENT_BUS_BACKEND_OPTIONS`` (a dict,
    Django settings only) are its keyword arguments. Default: NoOp."""
    spec = _settings.get("EVENT_BUS_BACKEND")
    options = _settings.get("EVENT_BUS_BACKEND_OPTIONS") or {}
    if not spec:
        return NoOpEventBackend()
    if isinstance(spec, EventBackend):
        return spec
    if isinstance(spec, type):
        return spec(**options)
    name = str(spec)
    cls: Any = _ALIASES.get(name.lower())
    if cls is None:
        if name.startswith("core.events."):
            # A settings file not yet migrated: core.events.X is crmbus.X.
            name = "crmbus." + name.rsplit(".", 1)[1]
        module_name, _, attr = name.rpartition(".")
        if not module_name:
            raise ValueError(f"EVENT_BUS_BACKEND={spec!r}: give a dotted path such as "
                             "'crmbus.CrmbusBackend'")
        cls = getattr(importlib.import_module(module_name), attr)
    return cls(**options)  # type: ignore[no-any-return]


def get_event_bus() -> EventBus:
    """The process-wide bus, built on first use from the settings (Django's, else the
    environment): see :func:`backend_from_settings`."""
    global _global_event_bus
    bus = _global_event_bus
    if bus is not None:
        return bus
    with _global_lock:
        if _global_event_bus is None:
            _global_event_bus = EventBus(backend_from_settings())
        return _global_event_bus


def set_event_bus(bus: EventBus | None) -> EventBus | None:
    """Replaces the process-wide bus (``None``: rebuilt from settings on next use) and
    returns the previous one, to put back later."""
    global _global_event_bus
    with _global_lock:
        previous = _global_event_bus
        _global_event_bus = bus
        return previous


def publish_event(
    event_type: str,
    data: Any = None,
    metadata: Mapping[str, Any] | None = None,
    topics: Sequence[str] | None = None,
    *,
    transactional: bool = False,
    using: str | None = None,
    subject: str | None = None,
    id: str | None = None,
    source: str | None = None,
    bus: EventBus | None = None,
) -> Event:
    """Builds an :class:`Event` and publishes it on the process-wide bus; returns it (with
    ``receipts`` when the backend gave them).

    ``transactional=True`` (Django): the event is published if and only if the current
    database transaction commits — with :class:`CrmbusBackend` it is written to the
    ``crmbus_outbox`` table on the transaction's connection (``using``), which
    ``crmbus outbox relay`` publishes; with an in-process backend it is published on commit.
    """
    event = Event(event_type, data, metadata, subject=subject, id=id, source=source)
    target = bus or get_event_bus()
    if transactional:
        from crmbus.django.outbox import publish_transactional

        publish_transactional(target, event, topics, using=using)
    else:
        target.publish(event, topics)
    return event
