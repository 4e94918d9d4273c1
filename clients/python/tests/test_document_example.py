"""The ``core.events`` document's own unit-test example ("Testing Events" / "Unit Test
Example"), unchanged but for the import line: ``from core.events import ...`` became
``from crmbus import ...``. The document's text is::

    from core.events import InMemoryEventBackend, EventBus, Event

    def test_event_publishing():
        # Setup
        backend = InMemoryEventBackend()
        bus = EventBus(backend)

        # Publish event
        event = Event('test.event', {'key': 'value'})
        bus.publish(event, topics=['test'])

        # Assert
        events = backend.get_events('test.event')
        assert len(events) == 1
        assert events[0].data['key'] == 'value'
"""

from crmbus import InMemoryEventBackend, EventBus, Event

def test_event_publishing():
    # Setup
    backend = InMemoryEventBackend()
    bus = EventBus(backend)
    
    # Publish event
    event = Event('test.event', {'key': 'value'})
    bus.publish(event, topics=['test'])
    
    # Assert
    events = backend.get_events('test.event')
    assert len(events) == 1
    assert events[0].data['key'] == 'value'
