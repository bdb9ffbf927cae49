"""Command-line tools from outside the project that some tests run (Node.js, npm).

A missing tool skips its tests with a reason that says how to install it; under CI=true
it fails them instead, like a missing server.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]


def missing(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true: a missing tool is a failure", pytrace=False)
    pytest.skip(reason)


def require(name: str, install: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed ({install})")
    return found


def npm_project(folder: Path) -> Path:
    """A committed npm project (package.json and package-lock.json) with its packages
    installed: `npm ci` the first time, under a lock, so parallel runs install once."""
    require("node", "Debian: apt-get install nodejs")
    npm = require("npm", "Debian: apt-get install npm")
    with (folder / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = folder / "node_modules" / ".package-lock.json"
        if not marker.exists():
            # --ignore-scripts: nothing of a package runs at install time.
            done = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                missing(f"npm ci in {folder.relative_to(ROOT)} failed: {done.stderr[-500:]}")
    return folder
