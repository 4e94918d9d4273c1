"""A small Django CRM for the tests: the deals app, crmbus as its event bus, PostgreSQL.

The database name, crmbus URL and topic come from the environment (the test makes a
database of its own and starts its own server)."""

import os

SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "crmbus.django",
    "deals",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CRMBUS_TEST_DB", "test"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The one setting that moves a core.events project to crmbus:
EVENT_BUS_BACKEND = "crmbus.CrmbusBackend"
CRMBUS_URL = os.environ.get("CRMBUS_URL", "http://127.0.0.1:7480")
CRMBUS_SOURCE = "urn:acme:crm"
CRMBUS_API_KEY = None

DEALS_TOPIC = os.environ.get("DEALS_TOPIC", "deals")
