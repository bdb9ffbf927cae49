"""The notifications service."""

from consumers.notifications.service import build

__all__ = ["build"]
