"""The documentation site builds with warnings as errors, and documents the public API.

``python -m sphinx -W --keep-going -b html docs OUT`` is the command a developer runs
(docs/conf.py): any warning (a broken link or cross-reference, a docstring that does
not parse, a page outside the table of contents) fails it.  The built site must then
hold an entry for every public name, and a section for every subcommand and option of
``dsmlr``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from dsmlr.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent

#: Modules whose ``__all__`` the API reference documents, name by name.
PUBLIC_MODULES = [
    "dsmlr",
    "dsmlr.defaults",
    "dsmlr.settings",
    "dsmlr.io",
    "dsmlr.distributed",
    "dsmlr.comm",
    "dsmlr.comm.launcher",
    "dsmlr.comm.mpi",
    "dsmlr.plan",
    "dsmlr.calibration",
    "dsmlr.memory",
    "dsmlr.cli",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           str(ROOT / "docs"), str(out)]  # fmt: skip
    started = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    assert run.returncode == 0, f"sphinx-build failed:\n{run.stdout}\n{run.stderr}"
    assert seconds < 60, f"the site took {seconds:.0f} s to build"
    return out


def _inventory(site: Path) -> set[str]:
    """The object names of the site's ``objects.inv`` (Sphinx's inventory, version 2)."""
    raw = (site / "objects.inv").read_bytes()
    header, body = raw.split(b"\n", 4)[:4], raw.split(b"\n", 4)[4]
    assert header[0] == b"# Sphinx inventory version 2"
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def test_the_site_builds_without_warnings(site):
    for page in ("index", "cli", "cli-reference", "python-api", "api", "formats",
                 "algorithm", "scaling-out", "cost-model", "benchmarks"):  # fmt: skip
        assert (site / f"{page}.html").is_file(), page


def test_every_public_name_has_an_api_entry(site):
    documented = _inventory(site)
    missing = [
        f"{module}.{name}"
        for module in PUBLIC_MODULES
        for name in importlib.import_module(module).__all__
        if f"{module}.{name}" not in documented
    ]
    assert not missing, f"not in docs/api.md: {missing}"


def test_the_estimator_has_every_method_documented(site):
    """Its own public methods, and the scikit-learn ones a user calls on it."""
    from dsmlr import DSMLRClassifier

    own = [
        name
        for name, value in vars(DSMLRClassifier).items()
        if not name.startswith("_") and inspect.isfunction(value)
    ]
    documented = _inventory(site)
    missing = [
        name
        for name in [*own, "score", "get_params", "set_params"]
        if f"dsmlr.DSMLRClassifier.{name}" not in documented
    ]
    assert not missing, f"DSMLRClassifier methods not in docs/api.md: {missing}"


def test_the_cli_reference_lists_every_subcommand_and_option(site):
    page = (site / "cli-reference.html").read_text(encoding="utf-8")
    (subparsers,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    for name, parser in subparsers.choices.items():
        assert f'id="dsmlr-{name}"' in page, name
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f'<span class="pre">{option}</span>' in page, (name, option)
