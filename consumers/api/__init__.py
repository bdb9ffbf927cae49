"""The HTTP API (`agentbus run api`): the shop's front door."""

from consumers.api.service import HttpApi, build
from consumers.api.tables import NAME

__all__ = ["NAME", "HttpApi", "build"]
