from django.apps import AppConfig


class DealsConfig(AppConfig):
    name = "deals"

    def ready(self):
        from deals import signals  # noqa: F401
