"""Fixtures for scripts/schemathesis.sh: the resources the OpenAPI document's examples name.

The examples in /openapi.json name topics `orders` (with events) and `orders-archive`, subscriptions
`orders-workers` (events to pull), `orders-dlq` (three dead letters, for listing and
redrive) and `orders-review` (on `orders-archive`: its three events are its dead letters
`0-0`, `0-1` and `0-2`, for showing and discarding; a redrive of all of orders-dlq cannot
take them away first), `orders-hook` (a webhook target, for rotating its secret and enabling it), and a topic
`doomed` and a subscription `doomed-sub` that the delete examples remove. This creates them through the public API before schemathesis runs, so that the
requests schemathesis generates from those examples find them. Nothing here is counted in
the per-operation summary: that comes from schemathesis's own cassette.

Usage: python3 scripts/schemathesis_seed.py BASE_URL KEY_FILE
"""

import json
import sys
import time
import urllib.error
import urllib.request

BASE = sys.argv[1].rstrip("/")


def call(method, path, body=None, content_type="application/json", expect=(200, 201)):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(req) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if status not in expect:
        sys.exit(f"seed: {method} {path} -> {status}: {text.decode(errors='replace')}")
    return json.loads(text) if text else None


def event(i):
    return {
        "specversion": "1.0",
        "id": f"seed-{i}",
        "source": "urn:acme:crm",
        "type": "order.placed",
        "subject": f"order-{i}",
        "data": {"amount": i},
    }


call("POST", "/v1/topics", {"name": "orders", "partitions": 1})
call("POST", "/v1/topics", {"name": "orders-archive", "partitions": 1})
call("POST", "/v1/topics", {"name": "doomed", "partitions": 1})
call(
    "POST",
    "/v1/topics/orders/events",
    [event(i) for i in range(6)],
    content_type="application/cloudevents-batch+json",
)
# Leases of two seconds: deliveries schemathesis pulls and never acks come back soon, so
# later pulls (and the ack and nack links that follow them) find deliveries too.
call("POST", "/v1/topics/orders/subscriptions", {"name": "orders-workers", "ack_timeout_ms": 2000})
call("POST", "/v1/topics/orders/subscriptions", {"name": "doomed-sub"})
call(
    "POST",
    "/v1/topics/orders/subscriptions",
    {"name": "orders-dlq", "retry": {"max_attempts": 1}},
)

# orders-review reads orders-archive, which holds exactly three events when it is pulled
# below: its dead letters are then 0-0, 0-1 and 0-2 whatever order the three are
# delivered in (the examples of showing and discarding name 0-0 and 0-1).
call(
    "POST",
    "/v1/topics/orders-archive/events",
    [dict(event(i), id=f"review-{i}") for i in range(3)],
    content_type="application/cloudevents-batch+json",
)
call(
    "POST",
    "/v1/topics/orders-archive/subscriptions",
    {"name": "orders-review", "retry": {"max_attempts": 1}},
)


def dead_letters(sub):
    """Three dead letters in `sub`: pulls the first three events and nacks them (one
    attempt allowed, so each goes straight to the DLQ), then waits until all are there."""
    pulled = call("POST", f"/v1/subscriptions/{sub}/pull", {"max_events": 3, "wait_ms": 5000})
    ids = [d["ack_id"] for d in pulled["deliveries"]]
    if len(ids) != 3:
        sys.exit(f"seed: expected 3 deliveries from {sub}, got {pulled}")
    call("POST", f"/v1/subscriptions/{sub}/nack", {"ack_ids": ids, "error": "seeded failure"})
    for _ in range(100):
        entries = call("GET", f"/v1/subscriptions/{sub}/dlq")["entries"]
        if len(entries) >= 3:
            return
        time.sleep(0.1)
    sys.exit(f"seed: {sub} has {len(entries)} dead letters, expected 3")


# orders-hook pushes to a webhook (for the secret rotation and enable examples): on
# 127.0.0.1, which scripts/schemathesis.sh allows, at a port nothing listens on, so its
# deliveries stay on this machine and fail there.
call(
    "POST",
    "/v1/topics/orders-archive/subscriptions",
    {"name": "orders-hook", "start": "latest",
     "target": {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}},
)

dead_letters("orders-dlq")
dead_letters("orders-review")
call("POST", "/v1/schemas/fixture.noted/versions", {"schema": {"type": "object"}})
# Last, an admin key (the server needs one from now on): scripts/schemathesis.sh sends it
# with every request schemathesis makes, written to the file named by the second argument.
made = call("POST", "/v1/keys", {"name": "schemathesis", "scopes": ["admin"]})
with open(sys.argv[2], "w") as f:
    f.write(made["key"])

print("seed: topics orders, orders-archive, doomed; subscriptions orders-workers, orders-dlq and orders-review (3 dead letters each), orders-hook (webhook), doomed-sub; schema fixture.noted v1; an admin key")
