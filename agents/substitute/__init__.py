"""The substitute agent."""

from agents.substitute.agent import NAME, declaration

__all__ = ["NAME", "declaration"]
