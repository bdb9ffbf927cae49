"""The orders service."""

from consumers.orders.service import build, read_state

__all__ = ["build", "read_state"]
