"""The worker: consumes an :class:`~crmbus.bus.EventBus`'s durable subscriptions.

Per subscription, a loop pulls as many deliveries as it has free handler slots
(``concurrency``), runs each delivery's handlers — ``async def`` ones on the loop, plain
ones in a thread — and acks the delivery when they all returned, or nacks it with the
exception's type, text and the tail of its traceback when one raised (the server then
retries with its backoff, and dead-letters after ``max_attempts``). The server hands out one
event per ``subject`` at a time, so per-key order holds at any concurrency.

A stop (``bus.stop()``, SIGTERM, SIGINT) pulls nothing more, lets the running handlers
finish and sends their acks and nacks, then returns: an event whose handler returned is
never lost or redelivered because of the stop; an event whose lease ran out is delivered
again by the server.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from crmbus.event import Delivery, Event
from crmbus.http import AsyncClient

if TYPE_CHECKING:  # pragma: no cover
    from crmbus.bus import EventBus, Subscription

logger = logging.getLogger("crmbus.worker")

_ERROR_MAX = 4000


def error_text(err: BaseException) -> str:
    """What a nack says about a handler's exception: ``Type: message`` and the traceback's
    last lines."""
    head = f"{type(err).__name__}: {err}"
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
    text = f"{head}\n{tb}".strip()
    return text[-_ERROR_MAX:] if len(text) > _ERROR_MAX else text


class Worker:
    """Runs the subscriptions of one bus (see the module's doc)."""

    def __init__(self, bus: EventBus, *, concurrency: int = 8, limit: int | None = None,
                 wait_ms: int = 1000) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.bus = bus
        self.concurrency = concurrency
        self.limit = limit
        self.wait_ms = wait_ms
        self.handled = 0
        self._started = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()

    # --- control -------------------------------------------------------------------------

    def stop(self, reason: str = "stop requested") -> None:
        """Stops pulling; running handlers finish and are acked. Thread-safe."""
        if not self._stop_requested.is_set():
            logger.info("crmbus worker: stopping (%s); finishing handlers in flight", reason)
        self._stop_requested.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop already closed
                pass

    def run(self, install_signal_handlers: bool | None = None) -> int:
        """Runs until stopped; installs SIGTERM/SIGINT handlers when called from the main
        thread (or when asked). Returns how many events were handled."""
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        return asyncio.run(self.arun(install_signal_handlers=install_signal_handlers))

    async def arun(self, install_signal_handlers: bool = False) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested.is_set():
            self._stop.set()
        installed: list[int] = []
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._loop.add_signal_handler(sig, self.stop, sig.name)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                    pass
        subs = list(self.bus.subscriptions.values())
        backend = self.bus.backend
        url = getattr(backend, "url", None)
        if not subs:
            logger.warning("crmbus worker: no subscription to consume (call bus.subscribe)")
        client = AsyncClient(
            url,
            api_key=getattr(backend, "api_key", None),
            ca_cert=getattr(backend, "ca_cert", None),
        )
        executor = ThreadPoolExecutor(
            max_workers=max(1, self.concurrency * max(1, len(subs))),
            thread_name_prefix="crmbus-handler",
        )
        logger.info(
            "crmbus worker: consuming %s from %s (concurrency %d)",
            ", ".join(f"{s.name} ({s.topic})" for s in subs) or "nothing",
            url,
            self.concurrency,
        )
        try:
            if subs:
                await asyncio.gather(*(self._consume(s, client, executor) for s in subs))
        finally:
            for sig in installed:
                self._loop.remove_signal_handler(sig)
            executor.shutdown(wait=True)
            await client.aclose()
            logger.info("crmbus worker: stopped after %d events", self.handled)
        return self.handled

    # --- consuming -----------------------------------------------------------------------

    def _budget(self) -> int | None:
        if self.limit is None:
            return None
        return max(0, self.limit - self._started)

    async def _consume(self, sub: Subscription, client: AsyncClient,
                       executor: ThreadPoolExecutor) -> None:
        assert self._stop is not None
        running: set[asyncio.Task[None]] = set()
        slot_free = asyncio.Event()
        slot_free.set()

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slot_free.set()
            if self.limit is not None and self.handled >= self.limit:
                self.stop("limit reached")

        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                free = self.concurrency - len(running)
                budget = self._budget()
                if budget is not None:
                    free = min(free, budget)
                if free <= 0:
                    slot_free.clear()
                    slot_wait = asyncio.ensure_future(slot_free.wait())
                    await asyncio.wait({slot_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    slot_wait.cancel()
                    continue
                try:
                    deliveries = await client.pull(sub.name, max_events=free, wait_ms=self.wait_ms)
                except Exception as err:
                    logger.error("crmbus worker: pull from %s failed: %s", sub.name, err)
                    await asyncio.wait({stop_wait}, timeout=1.0)
                    continue
                # Deliveries already leased are handled even if a stop came meanwhile.
                for d in deliveries:
                    self._started += 1
                    task = asyncio.ensure_future(self._handle(sub, client, executor, d))
                    running.add(task)
                    task.add_done_callback(done)
        finally:
            stop_wait.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _handle(self, sub: Subscription, client: AsyncClient,
                      executor: ThreadPoolExecutor, d: dict[str, Any]) -> None:
        ack_id = str(d["ack_id"])
        try:
            event = Event.from_cloudevent_dict(d["event"])
            event.delivery = Delivery(
                subscription=sub.name,
                topic=sub.topic,
                ack_id=ack_id,
                attempt=int(d.get("attempt", 1)),
                partition=int(d.get("partition", 0)),
                offset=int(d.get("offset", 0)),
                body=d.get("body"),
            )
            loop = asyncio.get_running_loop()
            for handler in list(sub.handlers):
                if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                    getattr(handler, "__call__", None)
                ):
                    await handler(event)
                else:
                    result = await loop.run_in_executor(executor, handler, event)
                    if inspect.isawaitable(result):
                        await result
        except Exception as err:
            logger.warning(
                "crmbus worker: handler failed on %s (%s, attempt %s): %s",
                sub.name, d.get("event", {}).get("id"), d.get("attempt"), err,
            )
            try:
                await client.nack(sub.name, [ack_id], error_text(err))
            except Exception as nack_err:  # the lease runs out: delivered again
                logger.error("crmbus worker: nack failed: %s", nack_err)
        else:
            try:
                answer = await client.ack(sub.name, [ack_id])
                if answer and answer.get("stale"):
                    logger.warning(
                        "crmbus worker: ack of %s came after its lease expired "
                        "(it is delivered again; raise ack_timeout_ms)",
                        d.get("event", {}).get("id"),
                    )
            except Exception as ack_err:
                logger.error("crmbus worker: ack failed: %s", ack_err)
        finally:
            self.handled += 1
