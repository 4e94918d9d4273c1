"""API keys, scopes, rate limits and HTTPS from Python, against real ``crmbus serve``
processes: the client sends its key (``api_key=`` or ``CRMBUS_API_KEY``), trusts a
self-signed certificate with ``ca_cert=`` (or ``CRMBUS_CA_CERT``), and refusals are typed
exceptions."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from crmbus import (
    Client,
    CrmbusBackend,
    Event,
    Forbidden,
    RateLimited,
    ServerUnreachable,
    Unauthorized,
)

from conftest import Server


def _self_signed(dir: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl): (certificate, key) PEM paths."""
    cert, key = dir / "tls.pem", dir / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=crmbus test",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def _event(subject: str) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "urn:test:security",
        "type": "note.added",
        "subject": subject,
        "data": {},
    }


def test_keys_and_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    s = Server(env={"CRMBUS_SERVER_TLS_CERT": cert, "CRMBUS_SERVER_TLS_KEY": key})
    try:
        assert s.url.startswith("https://")
        # The system's roots do not know a self-signed certificate.
        with Client(s.url, retries=0) as untrusted:
            with pytest.raises(ServerUnreachable):
                untrusted.request("GET", "/v1/topics")
        with Client(s.url, ca_cert=cert) as open_:
            # The first key is made while none exists.
            root = open_.request(
                "POST", "/v1/keys", body={"name": "root", "scopes": ["admin"]}
            )["key"]
            with pytest.raises(Unauthorized) as refused:
                open_.request("GET", "/v1/topics")
            assert refused.value.status == 401
        with Client(s.url, api_key=root, ca_cert=cert) as admin:
            admin.create_topic("deals", partitions=1)
            writer = admin.request(
                "POST", "/v1/keys", body={"name": "crm", "scopes": ["publish:deals"]}
            )["key"]
        # The backend a Django app configures: key and certificate from its settings.
        backend = CrmbusBackend(s.url, api_key=writer, ca_cert=cert)
        receipts = backend.publish(Event(event_type="note.added", data={}), ["deals"])
        assert [r.topic for r in receipts] == ["deals"]
        with Client(s.url, api_key=writer, ca_cert=cert) as w:
            with pytest.raises(Forbidden) as forbidden:
                w.create_topic("other")
            assert "admin" in forbidden.value.detail
            w.publish(_event("deal/1"), ["deals"])
    finally:
        s.stop()


def test_a_key_over_its_rate_gets_rate_limited_with_retry_after() -> None:
    s = Server(env={
        "CRMBUS_LIMITS_KEY_REQUESTS_PER_SECOND": "0.01",
        "CRMBUS_LIMITS_KEY_BURST": "2",
    })
    try:
        root = s.client.request(
            "POST", "/v1/keys", body={"name": "root", "scopes": ["admin"]}
        )["key"]
        with Client(s.url, api_key=root) as c:
            c.request("GET", "/v1/topics")
            c.request("GET", "/v1/topics")
            with pytest.raises(RateLimited) as limited:
                c.request("GET", "/v1/topics")
            assert limited.value.status == 429
            assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    finally:
        s.stop()
