"""The restock agent."""

from agents.restock.agent import NAME, declaration

__all__ = ["NAME", "declaration"]
