"""``crmbus-worker MODULE... [--concurrency N] [--limit N]``: imports the modules (which
subscribe their handlers on the process-wide bus, ``get_event_bus().subscribe(...)``) and
consumes those subscriptions until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crmbus-worker",
        description="Consume the durable subscriptions that MODULE's handlers registered "
        "with get_event_bus().subscribe(...), until SIGTERM or SIGINT.",
    )
    parser.add_argument("modules", nargs="+", metavar="MODULE",
                        help="modules to import, e.g. myapp.events")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="handlers running at once per subscription (default 8)")
    parser.add_argument("--limit", type=int, default=None,
                        help="stop after this many events")
    parser.add_argument("--url", default=None,
                        help="crmbus server (default: CRMBUS_URL, http://127.0.0.1:7480)")
    parser.add_argument("--log-level", default=os.environ.get("CRMBUS_LOG_LEVEL", "INFO"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.url:
        os.environ["CRMBUS_URL"] = args.url
    os.environ.setdefault("EVENT_BUS_BACKEND", "crmbus.CrmbusBackend")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    from crmbus.bus import get_event_bus

    bus = get_event_bus()
    for module in args.modules:
        importlib.import_module(module)
    bus = get_event_bus()
    if bus.backend.delivers_in_process:
        print(
            f"crmbus-worker: the bus's backend is {type(bus.backend).__name__}, which has no "
            "durable subscriptions; set EVENT_BUS_BACKEND=crmbus.CrmbusBackend",
            file=sys.stderr,
        )
        return 2
    bus.run(concurrency=args.concurrency, limit=args.limit)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
