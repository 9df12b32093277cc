"""The sign-in benchmarks keep working: a few responses of each, as subprocesses (no figures are checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: int = 300) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_acs_bench_times_every_kind_and_prints_the_ratios():
    out = run("bench/acs.py", "6", "3")
    assert "interleaved in blocks of 3" in out
    for label in (
        "stock pysaml2 parse",
        "response check, crypto_backend=inprocess",
        "response check, crypto_backend=xmlsec1",
        "POST /saml/acs, crypto_backend=inprocess",
        "POST /saml/acs, crypto_backend=xmlsec1",
    ):
        assert re.search(re.escape(label) + r".* /s +p50 +[\d.]+ ms", out), out
    assert re.search(r"ratio gateway check / stock parse: +\d+\.\d\d", out), out


def test_signin_e2e_bench_signs_people_in_at_both_servers():
    out = run(
        "bench/signin_e2e.py",
        "--skip-postgres",
        "--sqlite",
        "--rounds",
        "1",
        "--signins",
        "8",
        "--concurrency",
        "2",
        "--people",
        "6",
        timeout=600,
    )
    assert re.search(r"SQLite +round 1: gateway +[\d.]+/s +stock +[\d.]+/s", out), out
    assert re.search(r"SQLite +ratio +: \d+\.\d\d \((meets|MISSES) the 4x target\)", out), out
