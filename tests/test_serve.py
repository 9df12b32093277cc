"""``pserve development.ini`` starts and answers the health probes."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parent.parent


def wait_for(url, process, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pserve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@pytest.mark.slow
def test_pserve_development_ini_answers_healthz_and_readyz(tmp_path):
    ini = tmp_path / "development.ini"
    port = free_port()
    ini.write_text((ROOT / "development.ini").read_text().replace("127.0.0.1:6543", f"127.0.0.1:{port}"))
    subprocess.run([str(BIN / "gateway"), str(ini), "migrate"], check=True, capture_output=True, timeout=60)
    log = open(tmp_path / "pserve.log", "w+")
    process = subprocess.Popen(
        [str(BIN / "pserve"), str(ini)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status, body = wait_for(f"http://127.0.0.1:{port}/healthz", process)
        assert status == 200 and b'"ok"' in body
        status, body = wait_for(f"http://127.0.0.1:{port}/readyz", process)
        assert status == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
def test_pserve_refuses_a_bad_setting_with_one_line(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text((ROOT / "development.ini").read_text().replace("saml.clock_skew = 180", "saml.clock_skew = ten"))
    result = subprocess.run([str(BIN / "pserve"), str(ini)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'saml.clock_skew: expected a whole number of seconds between 0 and 600, got "ten"'
    )
    assert "Traceback" not in result.stderr
