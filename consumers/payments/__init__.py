"""The payments service."""

from consumers.payments.service import build

__all__ = ["build"]
