"""Handlers the ``crmbus_worker`` management command consumes (``manage.py crmbus_worker
deals.events``): each deal event's id and subject is appended to HANDLED_FILE."""

import os

from django.conf import settings

from crmbus import get_event_bus


def handle_deal_event(event):
    with open(os.environ["HANDLED_FILE"], "a") as f:
        f.write(f"{event.event_type} {event.subject} {event.metadata['user_id']}\n")


get_event_bus().subscribe(settings.DEALS_TOPIC, handle_deal_event,
                          group=os.environ["WORKER_GROUP"], start="earliest")
