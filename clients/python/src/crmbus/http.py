"""A small client of crmbus's HTTP API (``/v1``), sync and async, on httpx.

Publishes are retried on connection errors and on 502/503/504 — safe because a retry
sends the same event (same ``source`` + ``id``), which the server's producer dedupe stores
once. Nothing else is retried: a 4xx is raised at once as a :mod:`crmbus.errors` exception.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

import httpx

from crmbus.errors import CrmbusError, ServerUnreachable, from_problem
from crmbus.event import JSONEncoder

DEFAULT_URL = "http://127.0.0.1:7480"
_RETRY_STATUSES = (502, 503, 504)


@dataclass(frozen=True)
class Receipt:
    """Where one event landed in one topic; ``duplicate`` when the same ``source`` + ``id``
    had already been stored (nothing new was written)."""

    id: str
    topic: str
    partition: int
    offset: int
    duplicate: bool
    #: The event's version in its subject's stream (embedded log, events with a subject).
    version: int | None = None

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> Receipt:
        version = r.get("version")
        return cls(
            id=str(r["id"]),
            topic=str(r["topic"]),
            partition=int(r["partition"]),
            offset=int(r["offset"]),
            duplicate=bool(r["duplicate"]),
            version=int(version) if version is not None else None,
        )


@dataclass(frozen=True)
class SubjectEvent:
    """One event of a subject's stream: its ``version`` (1, 2, 3 ...) and the CloudEvent."""

    version: int
    event: dict[str, Any]
    partition: int
    offset: int
    appended_at: str


@dataclass(frozen=True)
class SubjectStream:
    """A read of one subject's stream: the subject's current ``version`` (0 before its first
    event), the events asked for, oldest first, and the version to read on from."""

    topic: str
    subject: str
    version: int
    events: list[SubjectEvent]
    next_version: int

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> SubjectStream:
        return cls(
            topic=str(r["topic"]),
            subject=str(r["subject"]),
            version=int(r["version"]),
            events=[
                SubjectEvent(
                    version=int(e["version"]),
                    event=dict(e["event"]),
                    partition=int(e["partition"]),
                    offset=int(e["offset"]),
                    appended_at=str(e["appended_at"]),
                )
                for e in r["events"]
            ],
            next_version=int(r["next_version"]),
        )


def _dumps(body: Any) -> bytes:
    return json.dumps(body, cls=JSONEncoder, separators=(",", ":")).encode()


def _seg(name: str) -> str:
    return quote(name, safe="")


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"accept": "application/json", "user-agent": "crmbus-python/0.1"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _verify(ca_cert: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies an https:// server with: the system's roots, and the PEM
    certificates in ``ca_cert`` (a self-signed certificate, a private CA) when given."""
    if not ca_cert:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_cert)
    return context


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = from_problem(
            response.status_code,
            body,
            f"{response.request.method} {response.request.url.path}: HTTP "
            f"{response.status_code} {response.text[:200]}",
        )
        retry_after = response.headers.get("retry-after")
        if retry_after is not None and retry_after.isdigit():
            setattr(error, "retry_after", float(retry_after))
        raise error
    if not response.content:
        return None
    return response.json()


def _unreachable(url: str, err: Exception) -> ServerUnreachable:
    return ServerUnreachable(
        f"crmbus server at {url} is unreachable: {err.__class__.__name__}: {err} "
        "(is `crmbus serve` running there? set CRMBUS_URL)"
    )


class Client:
    """Synchronous client. ``retries`` is how many times a publish is tried again after a
    connection error or 502/503/504, with ``backoff`` seconds doubling between tries."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        ca_cert: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or DEFAULT_URL).rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=self.url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
            verify=_verify(ca_cert),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        content_type: str = "application/json",
        params: Any = None,
        retry: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call; ``retry`` only for calls that are safe to repeat."""
        if body is not None:
            content = _dumps(body)
        hdrs = dict(headers or {})
        if content is not None:
            hdrs["content-type"] = content_type
        attempts = 1 + (self.retries if retry else 0)
        delay = self.backoff
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(
                    method, path, content=content, params=params, headers=hdrs
                )
            except httpx.TransportError as err:
                if last:
                    raise _unreachable(self.url, err) from err
            else:
                if response.status_code not in _RETRY_STATUSES or last:
                    return _answer(response)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    # --- publish -------------------------------------------------------------------------

    def publish(
        self,
        event: Mapping[str, Any],
        topics: Sequence[str],
        *,
        expected_version: int | None = None,
    ) -> list[Receipt]:
        """Publishes one structured CloudEvent to every topic (all or nothing); returns once
        it is durably stored, with one receipt per topic.

        ``expected_version`` (one topic, an event with a ``subject``): store the event only
        if its subject is at that version (0: no event yet); otherwise
        :class:`~crmbus.errors.VersionConflict` is raised and nothing is written."""
        if expected_version is not None:
            event = {**event, "expectedversion": int(expected_version)}
        answer = self.request(
            "POST",
            "/v1/events",
            params=[("topic", t) for t in topics],
            body=event,
            content_type="application/cloudevents+json",
            retry=True,
        )
        return [Receipt.from_json(r) for r in answer["receipts"]]

    def publish_batch(
        self, events: Sequence[Mapping[str, Any]], topics: Sequence[str]
    ) -> list[Receipt]:
        """Publishes several CloudEvents to every topic in one request (all or nothing)."""
        if not events:
            return []
        answer = self.request(
            "POST",
            "/v1/events",
            params=[("topic", t) for t in topics],
            body=list(events),
            content_type="application/cloudevents-batch+json",
            retry=True,
        )
        return [Receipt.from_json(r) for r in answer["receipts"]]

    # --- topics, subscriptions, dead letters ---------------------------------------------

    def create_topic(self, name: str, partitions: int | None = None, **extra: Any) -> Any:
        body: dict[str, Any] = {"name": name, **extra}
        if partitions is not None:
            body["partitions"] = partitions
        return self.request("POST", "/v1/topics", body=body)

    def ensure_topic(self, name: str, partitions: int | None = None) -> Any:
        """Creates the topic unless it exists."""
        try:
            return self.create_topic(name, partitions)
        except CrmbusError as err:
            if err.status == 409:
                return self.get_topic(name)
            raise

    def get_topic(self, name: str) -> Any:
        return self.request("GET", f"/v1/topics/{_seg(name)}")

    def delete_topic(self, name: str) -> Any:
        return self.request("DELETE", f"/v1/topics/{_seg(name)}")

    def read_events(self, topic: str, **params: Any) -> Any:
        return self.request("GET", f"/v1/topics/{_seg(topic)}/events", params=params)

    def read_subject(
        self, topic: str, subject: str, from_version: int = 1, limit: int = 100
    ) -> SubjectStream:
        """One subject's events from ``from_version`` on (at most ``limit``), with their
        versions and the subject's current version: rebuild an entity from its history."""
        return SubjectStream.from_json(
            self.request(
                "GET",
                f"/v1/topics/{_seg(topic)}/subjects/{_seg(subject)}/events",
                params={"from_version": from_version, "limit": limit},
            )
        )

    def subject_history(
        self, topic: str, subject: str, from_version: int = 1
    ) -> Iterator[SubjectEvent]:
        """Every event of a subject's stream from ``from_version`` on, page by page."""
        version = from_version
        while True:
            page = self.read_subject(topic, subject, version, 1000)
            yield from page.events
            if not page.events or page.next_version > page.version:
                return
            version = page.next_version

    def create_subscription(self, topic: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", f"/v1/topics/{_seg(topic)}/subscriptions", body=dict(body))

    def get_subscription(self, name: str) -> Any:
        return self.request("GET", f"/v1/subscriptions/{_seg(name)}")

    def delete_subscription(self, name: str) -> Any:
        return self.request("DELETE", f"/v1/subscriptions/{_seg(name)}")

    def pull(self, name: str, max_events: int = 10, wait_ms: int = 0) -> list[dict[str, Any]]:
        answer = self.request(
            "POST",
            f"/v1/subscriptions/{_seg(name)}/pull",
            body={"max_events": max_events, "wait_ms": wait_ms},
        )
        return list(answer["deliveries"])

    def ack(self, name: str, ack_ids: Iterable[str]) -> Any:
        return self.request(
            "POST", f"/v1/subscriptions/{_seg(name)}/ack", body={"ack_ids": list(ack_ids)}
        )

    def nack(
        self, name: str, ack_ids: Iterable[str], error: str, delay_ms: int | None = None
    ) -> Any:
        body: dict[str, Any] = {"ack_ids": list(ack_ids), "error": error}
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        return self.request("POST", f"/v1/subscriptions/{_seg(name)}/nack", body=body)

    def dlq(self, name: str, **params: Any) -> list[dict[str, Any]]:
        answer = self.request("GET", f"/v1/subscriptions/{_seg(name)}/dlq", params=params)
        return list(answer["entries"])


class AsyncClient:
    """The calls a worker makes, on ``httpx.AsyncClient``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        ca_cert: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = (url or DEFAULT_URL).rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(api_key), timeout=timeout, verify=_verify(ca_cert)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: Any, *, retry: bool = False) -> Any:
        attempts = 4 if retry else 1
        delay = 0.2
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._http.post(
                    path, content=_dumps(body), headers={"content-type": "application/json"}
                )
            except httpx.TransportError as err:
                if last:
                    raise _unreachable(self.url, err) from err
            else:
                if response.status_code not in _RETRY_STATUSES or last:
                    return _answer(response)
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def pull(self, name: str, max_events: int, wait_ms: int) -> list[dict[str, Any]]:
        answer = await self._post(
            f"/v1/subscriptions/{_seg(name)}/pull",
            {"max_events": max_events, "wait_ms": wait_ms},
        )
        return list(answer["deliveries"])

    async def ack(self, name: str, ack_ids: list[str]) -> Any:
        # An ack is idempotent (a second one settles nothing): safe to retry.
        return await self._post(
            f"/v1/subscriptions/{_seg(name)}/ack", {"ack_ids": ack_ids}, retry=True
        )

    async def nack(self, name: str, ack_ids: list[str], error: str) -> Any:
        return await self._post(
            f"/v1/subscriptions/{_seg(name)}/nack",
            {"ack_ids": ack_ids, "error": error},
            retry=True,
        )
