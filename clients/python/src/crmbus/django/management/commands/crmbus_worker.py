"""``python manage.py crmbus_worker [MODULE...] [--concurrency N] [--limit N]``."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import autodiscover_modules


class Command(BaseCommand):
    help = (
        "Consume the durable crmbus subscriptions that handlers registered with "
        "get_event_bus().subscribe(...), until SIGTERM or SIGINT. Imports the MODULEs "
        "given, else every installed app's 'events' module."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("modules", nargs="*", metavar="MODULE")
        parser.add_argument("--concurrency", type=int, default=8)
        parser.add_argument("--limit", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("crmbus").setLevel(logging.INFO)
        if options["modules"]:
            for module in options["modules"]:
                importlib.import_module(module)
        else:
            autodiscover_modules("events")
        from crmbus.bus import get_event_bus

        bus = get_event_bus()
        if bus.backend.delivers_in_process:
            raise CommandError(
                f"EVENT_BUS_BACKEND is {type(bus.backend).__name__}, which has no durable "
                "subscriptions: set EVENT_BUS_BACKEND = 'crmbus.CrmbusBackend'"
            )
        bus.run(concurrency=options["concurrency"], limit=options["limit"])
