"""``pserve development.ini`` starts and answers the health probes."""

import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, free_port

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_pserve_development_ini_answers_healthz_and_readyz(tmp_path, pserve):
    ini = tmp_path / "development.ini"
    port = free_port()
    ini.write_text((ROOT / "development.ini").read_text().replace("127.0.0.1:6543", f"127.0.0.1:{port}"))
    served = pserve(ini, port)
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(served.url + path, timeout=10) as response:
            assert response.status == 200 and b'"ok"' in response.read()


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
