"""The worked example plugin (examples/acme-gateway-plugin) passes its own tests,
written with gateway.testing, against the installed gateway.

The example is installed into a folder of its own (``pip install --target``,
no dependencies: the gateway is this venv's) and put on ``PYTHONPATH`` for one
pytest subprocess run from a copy of the example's folder: so the project's
tests/conftest.py is never loaded, the kit comes in through its ``pytest11``
entry point as in any author's environment, the plugin is found through its
``gateway`` entry point, and nothing is installed into this venv for the
other tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import server_environment

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "acme-gateway-plugin"
BIN = Path(sys.executable).parent


def test_the_example_plugin_passes_its_own_tests(tmp_path):
    # A copy, so that building the wheel leaves nothing in the repository.
    source = tmp_path / "acme-gateway-plugin"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    # No build isolation: offline, with the setuptools of this venv (the test extra).
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (site / "acme_gateway" / "__init__.py").exists()

    result = subprocess.run(
        [str(BIN / "pytest"), "-p", "no:cacheprovider", "-p", "no:xdist", "-W", "ignore::DeprecationWarning"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        env=server_environment({"PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Its own folder was the root (its pyproject's settings, its conftest), and its tests ran.
    assert f"rootdir: {source}" in output
    assert "tests/test_policy.py" in output and "tests/test_events.py" in output
    assert " passed" in output and "failed" not in output and "error" not in output.lower()
