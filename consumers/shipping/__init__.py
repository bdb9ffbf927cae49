"""The shipping service."""

from consumers.shipping.service import build, read_state

__all__ = ["build", "read_state"]
