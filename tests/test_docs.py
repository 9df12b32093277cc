"""The README documents every hook (with its exact signature) and every setting."""

import inspect
import re
from pathlib import Path

import pytest

from gateway import hookspecs
from gateway.settings import documented_keys

README = (Path(__file__).parent.parent / "README.md").read_text()


def plugin_section() -> str:
    start = README.index("## Writing a plugin")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def hook_names():
    return sorted(name for name in dir(hookspecs) if name.startswith("gateway_"))


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented_with_its_signature(name):
    signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
    assert f"`{signature}`" in plugin_section(), f"README's plugin section lacks `{signature}`"


@pytest.mark.parametrize("name", hook_names())
def test_hook_has_a_reference_docstring(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc.split()) >= 20, f"{name} needs a docstring that says when it is called and what to return"


def test_documented_hooks_exist():
    documented = set(re.findall(r"^#### `(gateway_\w+)\(", plugin_section(), re.M))
    assert documented == set(hook_names())


@pytest.mark.parametrize("key", documented_keys())
def test_setting_is_documented(key):
    assert re.search(rf"^\| `{re.escape(key)}` \|", README, re.M), f"README's configuration reference lacks {key}"


def test_readme_starts_with_the_two_set_up_commands():
    first_block = README.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["./dev run", "./dev test"]
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "exec ./dev test" in ci and "GATEWAY_TEST_REQUIRE_POSTGRES=1" in ci
