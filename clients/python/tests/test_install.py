"""`pip install ./clients/python` in a fresh virtualenv, then the README's quick-start
example, exactly as written there, against a real server; and the packaged outbox SQL is
the repository's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TESTS

CLIENT = TESTS.parent


def readme_example() -> str:
    text = (CLIENT / "README.md").read_text()
    m = re.search(r"<!-- example: quickstart -->\s*```python\n(.*?)```", text, re.S)
    assert m, "the README's quick-start example is marked <!-- example: quickstart -->"
    return m.group(1)


def test_pip_install_in_a_fresh_virtualenv_then_the_readme_example(server, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    install = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(CLIENT)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    # Installed, not this tree's source: nothing of the repository on the path.
    where = subprocess.run([py, "-c", "import crmbus; print(crmbus.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert str(venv) in where.stdout
    assert (venv / "bin" / "crmbus-worker").exists()

    # The README's prerequisite: `crmbus topics create deals`.
    server.cli("topics", "create", "deals")
    try:
        example = tmp_path / "example.py"
        example.write_text(readme_example())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EVENT_BUS",
                                                                         "DJANGO"))}
        env["CRMBUS_URL"] = server.url
        run = subprocess.run([py, "example.py"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "stored durably: [Receipt(id=" in run.stdout
        assert "Deal deal-42 moved to qualification by u-7" in run.stdout
    finally:
        server.client.delete_topic("deals")


def test_packaged_outbox_sql_is_the_repositorys():
    packaged = (CLIENT / "src" / "crmbus" / "django" / "outbox.sql").read_text()
    repo = (REPO / "crates" / "crmbus-postgres" / "sql" / "outbox.sql").read_text()
    assert packaged == repo, (
        "clients/python/src/crmbus/django/outbox.sql differs from "
        "crates/crmbus-postgres/sql/outbox.sql: copy it over"
    )
