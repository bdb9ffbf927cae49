"""The inventory service."""

from consumers.inventory.service import build, read_state

__all__ = ["build", "read_state"]
