"""The `agentbus` command line."""

from agentbus.cli.main import main

__all__ = ["main"]
