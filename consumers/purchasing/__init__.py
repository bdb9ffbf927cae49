"""The purchasing service."""

from consumers.purchasing.service import build

__all__ = ["build"]
