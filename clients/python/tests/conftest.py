"""Test support: real crmbus servers (``target/debug/crmbus serve``) on ephemeral ports with
temporary data directories, unique names, the CLI, and a worker in a thread.

``CRMBUS_BIN`` names the binary (``scripts/pytest.sh`` sets it; default: the repository's
``target/debug/crmbus``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from crmbus import Client, EventBus

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[2]
CRMBUS_BIN = os.environ.get("CRMBUS_BIN") or str(REPO / "target" / "debug" / "crmbus")
_LISTENING = re.compile(r"listening on (https?://\S+)")


class Server:
    """One ``crmbus serve`` process on 127.0.0.1:<ephemeral> with its own data directory."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        if not os.access(CRMBUS_BIN, os.X_OK):
            raise RuntimeError(
                f"{CRMBUS_BIN} is missing: build it with `cargo build -p crmbus-cli` "
                "(scripts/pytest.sh does)"
            )
        self.data_dir = tempfile.mkdtemp(prefix="crmbus-pytest-")
        self.log_path = os.path.join(self.data_dir, "server.log")
        # `crmbus serve` says where it listens on stderr: read it, then keep draining
        # stderr into a log file so the pipe never fills.
        self.proc = subprocess.Popen(
            [CRMBUS_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir",
             os.path.join(self.data_dir, "data")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stderr is not None
        seen = []
        m = None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            seen.append(line)
            m = _LISTENING.search(line)
            if m:
                break
        if not m:
            self.proc.kill()
            raise RuntimeError(f"crmbus serve did not say where it listens: {''.join(seen)!r}")
        stderr = self.proc.stderr
        log = open(self.log_path, "ab")
        log.write("".join(seen).encode())

        def drain() -> None:
            for chunk in stderr:
                log.write(chunk)
                log.flush()
            log.close()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        self.url = m.group(1)
        self.client = Client(self.url)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs ``crmbus ARGS --url URL``."""
        return subprocess.run(
            [CRMBUS_BIN, *args, "--url", self.url],
            capture_output=True, text=True, check=check, timeout=60,
        )

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(10)
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One crmbus server for the session; every test uses its own topic and group names."""
    s = Server()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique('deals')`` -> ``deals-3f2a9c1e``: names no other test uses."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_topic(server: Server, unique: Callable[[str], str]) -> Iterator[Callable[..., str]]:
    """Creates unique topics (deleted after the test, with their subscriptions)."""
    made: list[str] = []

    def make(prefix: str = "topic", partitions: int = 4) -> str:
        name = unique(prefix)
        server.client.create_topic(name, partitions)
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            server.client.delete_topic(name)
        except Exception:
            pass


def wait_for(predicate: Callable[[], Any], what: str, deadline_s: float = 60.0) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails naming ``what`` if it
    never does (a bound against hanging, not a speed assertion)."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


class ThreadWorker:
    """``bus.run()`` in a thread, stopped with ``bus.stop()``."""

    def __init__(self, bus: EventBus, **kwargs: Any) -> None:
        self.bus = bus
        self.result: list[Any] = []
        self.error: list[BaseException] = []

        def target() -> None:
            try:
                self.result.append(bus.run(install_signal_handlers=False, **kwargs))
            except BaseException as err:  # pragma: no cover - reported by join()
                self.error.append(err)

        self.thread = threading.Thread(target=target, daemon=True)

    def __enter__(self) -> ThreadWorker:
        self.thread.start()
        return self

    def join(self, deadline_s: float = 60.0) -> int:
        self.thread.join(deadline_s)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error[0]
        return int(self.result[0])

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            wait_for(lambda: self.bus._worker is not None or not self.thread.is_alive(),
                     "worker started")
            self.bus.stop()
        self.join()


def python() -> str:
    return sys.executable
