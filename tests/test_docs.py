"""The docs document every hook (with its exact signature) and every setting, and build without warnings."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import hookspecs
from gateway.settings import documented_keys

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
PLUGINS = (DOCS / "plugins.md").read_text()
CONFIGURATION = "\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))


def hook_names():
    return sorted(name for name in dir(hookspecs) if name.startswith("gateway_"))


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented_with_its_signature(name):
    signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
    assert f"`{signature}`" in PLUGINS, f"docs/plugins.md lacks `{signature}`"


@pytest.mark.parametrize("name", hook_names())
def test_hook_has_a_reference_docstring(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc.split()) >= 20, f"{name} needs a docstring that says when it is called and what to return"


def test_documented_hooks_exist():
    documented = set(re.findall(r"^### `(gateway_\w+)\(", PLUGINS, re.M))
    assert documented == set(hook_names())


@pytest.mark.parametrize("key", documented_keys())
def test_setting_is_documented(key):
    assert re.search(rf"^\| `{re.escape(key)}` \|", CONFIGURATION, re.M), f"docs/ lack a table row for {key}"


def test_readme_starts_with_the_two_set_up_commands():
    first_block = README.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["./dev run", "./dev test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./dev test" in ci and "GATEWAY_TEST_REQUIRE_POSTGRES=1" in ci


def test_readme_links_resolve():
    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
