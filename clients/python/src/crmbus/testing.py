"""Test support (a pytest plugin, loaded automatically when crmbus is installed).

The ``event_bus`` fixture puts an ``EventBus(InMemoryEventBackend())`` in place of the
process-wide bus for one test and puts the previous one back after it::

    def test_deal_move_publishes_event(event_bus, client):
        client.post('/api/deals/move/', {...})
        assert len(event_bus.backend.get_events('deal.stage_changed')) == 1

Outside pytest, :func:`use_event_bus` does the same as a context manager.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest

from crmbus.backends import InMemoryEventBackend
from crmbus.bus import EventBus, set_event_bus


@contextmanager
def use_event_bus(bus: EventBus | None = None) -> Iterator[EventBus]:
    """Makes ``bus`` (default: a new in-memory bus) the process-wide bus in the block."""
    bus = bus if bus is not None else EventBus(InMemoryEventBackend())
    previous = set_event_bus(bus)
    try:
        yield bus
    finally:
        set_event_bus(previous)


@pytest.fixture
def event_bus() -> Iterator[EventBus]:
    """An in-memory bus as the process-wide bus for this test (``event_bus.backend`` is the
    ``InMemoryEventBackend``: ``get_events(type)``, ``clear()``)."""
    with use_event_bus() as bus:
        yield bus
