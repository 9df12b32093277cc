"""bench/soak.py keeps working: a few seconds of it, on a PostgreSQL database of its own.

A benchmark, so nothing here measures: the run must start the server, make
signed sign-ins, /auth checks and SCIM writes without an error, and print
its lines.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_the_soak_runs_a_few_seconds_without_errors(postgres_server_url, tmp_path):
    database = f"gw_soak_{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(postgres_server_url).set(database=database).render_as_string(hide_password=False)
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "soak.py"),
                "--minutes",
                "0.25",
                "--interval",
                "5",
                "--database",
                url,
                "--workdir",
                str(tmp_path / "soak"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=__import__("conftest").server_environment(),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line.split() for line in result.stdout.splitlines() if re.match(r"\s+\d+\s+\d+\s+\d+\s", line)]
        assert len(lines) == 3, result.stdout
        # minute, requests, errors, an RSS per worker (two), sessions, audit_events, users
        assert all(len(line) == 8 for line in lines), result.stdout
        total = re.search(r"total: (\d+) requests, (\d+) errors", result.stdout)
        assert total and int(total.group(1)) > 0 and total.group(2) == "0", result.stdout + result.stderr
        assert int(lines[-1][5]) > 0 and int(lines[-1][7]) > 0  # sessions and users were made
        assert "server log: 0 tracebacks" in result.stdout
    finally:
        admin = sa.create_engine(
            sa.engine.make_url(postgres_server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
