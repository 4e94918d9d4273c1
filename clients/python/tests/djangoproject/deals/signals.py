"""The document's signal example, with crmbus: the import line changed, and
``transactional=True`` so the event is published if and only if the save commits."""

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from crmbus import publish_event
from deals.models import Deal


@receiver(post_save, sender=Deal)
def deal_saved(sender, instance, created, **kwargs):
    event_type = 'deal.created' if created else 'deal.updated'

    publish_event(
        event_type=event_type,
        data={
            'deal_id': str(instance.id),
            'name': instance.name,
            'amount': str(instance.amount)
        },
        metadata={'user_id': 'u-1', 'ip_address': '192.168.1.1'},
        topics=[settings.DEALS_TOPIC],
        transactional=True,
    )
