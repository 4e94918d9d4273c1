"""Django integration (``pip install crmbus[django]``).

Add ``'crmbus.django'`` to ``INSTALLED_APPS`` and set in ``settings.py``::

    EVENT_BUS_BACKEND = 'crmbus.CrmbusBackend'
    CRMBUS_URL = 'http://127.0.0.1:7480'
    CRMBUS_SOURCE = 'urn:acme:crm'
    CRMBUS_API_KEY = None            # sent as 'Authorization: Bearer ...' when set

The process-wide bus (``crmbus.get_event_bus()``) is built from these settings on first use.
``publish_event(..., transactional=True)`` inside ``transaction.atomic()`` writes the event
to the ``crmbus_outbox`` table (created by this app's migration, the same SQL as
``crmbus outbox init``) in the same transaction; ``crmbus outbox relay`` publishes it once
the transaction commits, and never if it rolls back. ``python manage.py crmbus_worker``
consumes the handlers' durable subscriptions.
"""

from crmbus.django.outbox import publish_transactional, write_outbox

__all__ = ["publish_transactional", "write_outbox"]
