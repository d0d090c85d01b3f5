"""What a results file records about the run: date, commit, machine and library versions."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["describe", "summary"]

HERE = Path(__file__).resolve().parent

_PACKAGES = ("numpy", "scipy", "scikit-learn", "numba", "mpi4py", "torch", "cyanure")


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _commit() -> str:
    """The checkout's short commit, saying so where ``src/`` has uncommitted changes."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=HERE, check=True)  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../src"],
                               capture_output=True, text=True, cwd=HERE).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (with uncommitted changes to src/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe() -> dict:
    """Date (UTC), commit, CPU model, core count, Python and library versions."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "versions": versions,
    }


def summary(env: dict) -> str:
    """One line of :func:`describe`'s record, for a results file's header."""
    libs = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return f"{env['date']}, commit {env['commit']}; {env['cpu']}, {env['cores']} cores; {libs}."
