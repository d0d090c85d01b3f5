"""Sphinx configuration of the dsmlr documentation site.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``tests/test_docs_site.py`` does, with warnings as errors).  The pages are Markdown
(MyST); the API pages come from the docstrings (autodoc + numpydoc) and the command-line
reference from the argparse parser (``_ext/dsmlr_cli.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import dsmlr  # noqa: E402  (after the path set-up above, for the extension)

project = "dsmlr"
author = "The dsmlr developers"
copyright = "The dsmlr developers, BSD-3-Clause"
release = version = dsmlr.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "dsmlr_cli",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

# MyST: ``:::{directive}`` fences (so that tests/test_docs.py, which runs ``bash`` and
# ``python`` fences, never mistakes a directive for code) and GitHub-style anchors for
# the ``page.md#section`` links that the pages share with GitHub's rendering.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# autodoc + numpydoc: members in source order, type hints in the signature only, and no
# autosummary tables of class members (the members are documented in full below them).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autosummary_generate = False

html_theme = "alabaster"
html_title = f"dsmlr {release}"
html_theme_options = {"description": "Multinomial logistic regression at extreme scale"}
