"""crmbus: the Python client of crmbus, with the ``core.events`` API.

``from core.events import X`` becomes ``from crmbus import X``; set
``EVENT_BUS_BACKEND = 'crmbus.CrmbusBackend'`` (and ``CRMBUS_URL``) to publish durably to a
crmbus server. See the package README for the migration guide.
"""

from crmbus.backends import (
    CrmbusBackend,
    EventBackend,
    InMemoryEventBackend,
    LoggingEventBackend,
    NoOpEventBackend,
)
from crmbus.bus import (
    Batch,
    EventBus,
    Subscription,
    get_event_bus,
    publish_event,
    set_event_bus,
)
from crmbus.errors import (
    Conflict,
    CrmbusError,
    FieldError,
    Forbidden,
    InvalidEvent,
    NotFound,
    RateLimited,
    SchemaViolation,
    ServerUnreachable,
    SubscriptionNotFound,
    TopicNotFound,
    Unauthorized,
    Unsupported,
    VersionConflict,
)
from crmbus.event import Delivery, Event
from crmbus.http import Client, Receipt, SubjectEvent, SubjectStream

__all__ = [
    "Batch",
    "Client",
    "Conflict",
    "CrmbusBackend",
    "CrmbusError",
    "Delivery",
    "Event",
    "EventBackend",
    "EventBus",
    "FieldError",
    "Forbidden",
    "InMemoryEventBackend",
    "InvalidEvent",
    "LoggingEventBackend",
    "NoOpEventBackend",
    "NotFound",
    "RateLimited",
    "Receipt",
    "SchemaViolation",
    "ServerUnreachable",
    "SubjectEvent",
    "SubjectStream",
    "Subscription",
    "SubscriptionNotFound",
    "TopicNotFound",
    "Unauthorized",
    "Unsupported",
    "VersionConflict",
    "get_event_bus",
    "publish_event",
    "set_event_bus",
]

__version__ = "0.1.0"
