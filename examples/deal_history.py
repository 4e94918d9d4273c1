"""Rebuild a deal's state from its stream: event sourcing on crmbus.

Every event with a ``subject`` (the business key, ``deal-42``) gets the next version of
that subject's stream (1, 2, 3 ...) when the embedded log stores it. This example

* writes a deal's history with ``expected_version``: each write states the version the
  writer last saw, so a writer that missed a change gets ``VersionConflict`` (HTTP 409,
  nothing written) instead of overwriting it; it reads the stream again, decides again
  and retries;
* rebuilds the deal by folding its stream, oldest first (``apply`` below): the state is
  whatever the events say, with the version it was rebuilt at.

Run a server (``crmbus serve``), then::

    python examples/deal_history.py --demo            # write a deal's history, rebuild it
    python examples/deal_history.py deals deal-42     # rebuild an existing deal

``--url`` (or ``CRMBUS_URL``) names the server; the default is http://127.0.0.1:7480.
Snapshots are out of scope: a deal's stream is short, and the rebuild reads it from the
start (``from_version`` lets a caller that kept a state resume from where it was).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

from crmbus import Client, VersionConflict

# The deal events of the CRM's catalog (deal.created, deal.updated, deal.stage_changed,
# deal.won, deal.lost, deal.deleted) and the fields they carry.


def apply(state: dict[str, Any] | None, version: int, event: dict[str, Any]) -> dict[str, Any]:
    """The deal after one more event of its stream."""
    data = event.get("data") or {}
    kind = event["type"]
    deal = dict(state or {})
    if kind == "deal.created":
        deal = {
            "deal_id": data["deal_id"],
            "name": data.get("name"),
            "amount": data.get("amount"),
            "stage": "prospecting",
            "status": "open",
        }
    elif kind == "deal.updated":
        deal.update(data.get("changed_fields") or {})
    elif kind == "deal.stage_changed":
        deal["stage"] = data["new_stage"]
    elif kind == "deal.won":
        deal.update(status="won", amount=data.get("amount", deal.get("amount")),
                    close_date=data.get("close_date"))
    elif kind == "deal.lost":
        deal.update(status="lost", lost_reason=data.get("reason"))
    elif kind == "deal.deleted":
        deal["status"] = "deleted"
    deal["version"] = version
    return deal


class IncompleteHistory(Exception):
    """The topic's retention removed the deal's oldest events: its stream alone cannot
    rebuild it (keep a snapshot, or a longer retention, for such entities)."""


def rebuild(client: Client, topic: str, deal_id: str) -> dict[str, Any] | None:
    """Folds the deal's whole stream; ``None`` for a deal without events."""
    state: dict[str, Any] | None = None
    page = client.read_subject(topic, deal_id, 1, 1000)
    first = page.events[0].version if page.events else page.version + 1
    if first > 1:
        raise IncompleteHistory(f"{deal_id}'s stream in {topic} starts at version {first}")
    while True:
        for item in page.events:
            state = apply(state, item.version, item.event)
        if not page.events or page.next_version > page.version:
            return state
        page = client.read_subject(topic, deal_id, page.next_version, 1000)


def deal_event(kind: str, deal_id: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:example:crm:deals",
        "type": kind,
        "subject": deal_id,
        "datacontenttype": "application/json",
        "data": {"deal_id": deal_id, **data},
    }


def write(client: Client, topic: str, deal_id: str, decide: Any, attempts: int = 10) -> int:
    """Appends what ``decide(state)`` returns, stating the version the state was rebuilt
    at; on a conflict, rebuilds and decides again (at most ``attempts`` times, waiting a
    little longer each time). Returns the version written."""
    for attempt in range(attempts):
        state = rebuild(client, topic, deal_id)
        event = decide(state)
        seen = state["version"] if state else 0
        try:
            receipt = client.publish(event, [topic], expected_version=seen)[0]
            return int(receipt.version or 0)
        except VersionConflict as conflict:
            print(f"  {deal_id} moved on to version {conflict.current_version} while we "
                  f"decided at {seen}: reading it again", file=sys.stderr)
            time.sleep(min(0.01 * 2**attempt, 1.0))
    raise RuntimeError(f"{deal_id} kept changing: gave up after {attempts} attempts")


def demo(client: Client, topic: str) -> tuple[dict[str, Any], int]:
    """Writes a deal's history (with one writer racing another), rebuilds it. Returns the
    rebuilt deal and how many conflicts the writers met."""
    client.ensure_topic(topic, 4)
    deal_id = f"deal-{uuid.uuid4().hex[:8]}"
    write(client, topic, deal_id,
          lambda s: deal_event("deal.created", deal_id, name="Acme renewal", amount="12000.00"))
    write(client, topic, deal_id,
          lambda s: deal_event("deal.stage_changed", deal_id, old_stage=s["stage"],
                               new_stage="qualification"))
    # A second writer decided on what it read at this version ...
    stale = rebuild(client, topic, deal_id)
    assert stale is not None
    # ... while the first moves the deal on.
    write(client, topic, deal_id,
          lambda s: deal_event("deal.updated", deal_id, changed_fields={"amount": "15000.00"}))
    conflicts = 0
    try:
        client.publish(deal_event("deal.lost", deal_id, reason="no budget"), [topic],
                       expected_version=stale["version"])
    except VersionConflict:
        conflicts += 1  # refused: the deal changed since the second writer looked
    write(client, topic, deal_id,
          lambda s: deal_event("deal.won", deal_id, amount=s["amount"], close_date="2026-12-05"))
    state = rebuild(client, topic, deal_id)
    assert state is not None
    return state, conflicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic", nargs="?", default="deals")
    parser.add_argument("deal_id", nargs="?")
    parser.add_argument("--demo", action="store_true",
                        help="write a new deal's history first, then rebuild it")
    parser.add_argument("--url", default=os.environ.get("CRMBUS_URL", "http://127.0.0.1:7480"))
    args = parser.parse_args()
    with Client(args.url) as client:
        if args.demo:
            state, conflicts = demo(client, args.topic)
            print(f"a stale write was refused {conflicts} time(s)", file=sys.stderr)
        elif args.deal_id:
            try:
                state = rebuild(client, args.topic, args.deal_id)
            except IncompleteHistory as err:
                print(f"cannot rebuild: {err}", file=sys.stderr)
                return 1
            if state is None:
                print(f"{args.deal_id} has no events in {args.topic}", file=sys.stderr)
                return 1
        else:
            parser.error("name a deal (TOPIC DEAL_ID) or pass --demo")
    print(json.dumps(state, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
