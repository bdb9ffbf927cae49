"""Tests over packages that only a dependency group or an extra installs.

Without the package such a test skips with a reason that says how to install it;
under CI=true, which installs them all (.ci/run), it fails instead.
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def need(module: str, install: str) -> None:
    """Skip (or fail under CI=true) unless `module` can be imported."""
    if importlib.util.find_spec(module) is not None:
        return
    message = f"{module} is not installed (install it with: {install})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true installs it, so its absence is a failure", pytrace=False)
    pytest.skip(message)
