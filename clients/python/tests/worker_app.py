"""The application module the SIGTERM test runs with ``crmbus-worker worker_app``: it
subscribes one handler on the process-wide bus, as ``myapp/events.py`` would.

Settings come from the environment: CRMBUS_URL, TEST_TOPIC, TEST_GROUP, TEST_OUT (a file
the handler appends each finished event's seq to), TEST_HOLD (the seq whose handler waits,
after writing TEST_OUT + '.started', until the file TEST_RELEASE exists).
"""

import os
import time

from crmbus import get_event_bus

TOPIC = os.environ["TEST_TOPIC"]
OUT = os.environ["TEST_OUT"]
HOLD = os.environ.get("TEST_HOLD")
RELEASE = os.environ.get("TEST_RELEASE", "")


def record_deal(event):
    seq = str(event.data["seq"])
    if seq == HOLD:
        with open(OUT + ".started", "w") as f:
            f.write(seq)
        while not os.path.exists(RELEASE):
            time.sleep(0.01)
    with open(OUT, "a") as f:
        f.write(seq + "\n")


get_event_bus().subscribe(TOPIC, record_deal, group=os.environ["TEST_GROUP"], start="earliest")
