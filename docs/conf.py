"""Sphinx configuration for the gateway's documentation (built in the test suite with warnings as errors)."""

project = "Identity gateway for Microsoft Entra ID"
author = "The identity gateway developers"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
# Headings become link targets (`configuration.md#core`), down to ####.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build", "proxies"]
html_theme = "furo"
html_title = "Identity gateway"
html_static_path = ["_static"]
