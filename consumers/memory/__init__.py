"""The memory service."""

from consumers.memory.service import COLLECTION, build, episode

__all__ = ["COLLECTION", "build", "episode"]
