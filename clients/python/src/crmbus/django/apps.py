"""The Django app of crmbus: the outbox table's migration and ``crmbus_worker``."""

from django.apps import AppConfig


class CrmbusConfig(AppConfig):
    name = "crmbus.django"
    label = "crmbus"
    verbose_name = "crmbus"
    default_auto_field = "django.db.models.BigAutoField"
