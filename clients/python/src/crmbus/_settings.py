"""Settings lookup: Django's settings when Django is configured, else the environment.

Names: ``EVENT_BUS_BACKEND`` (dotted path of the backend class, or one of ``crmbus``,
``noop``, ``logging``, ``memory``), ``CRMBUS_URL``, ``CRMBUS_SOURCE``, ``CRMBUS_API_KEY``, ``CRMBUS_CA_CERT``.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _django_settings() -> Any | None:
    if "django.conf" not in sys.modules:
        return None
    try:
        from django.conf import settings

        if settings.configured:
            return settings
    except Exception:  # pragma: no cover - a half-configured Django
        return None
    return None


def get(name: str, default: Any = None) -> Any:
    """The setting ``name``: Django's when set there, else the environment variable of the
    same name, else ``default``."""
    settings = _django_settings()
    if settings is not None:
        try:
            value = getattr(settings, name, None)
        except Exception:  # ImproperlyConfigured while settings load
            value = None
        if value is not None:
            return value
    value = os.environ.get(name)
    if value is not None and value != "":
        return value
    return default
