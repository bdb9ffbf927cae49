"""The review console: suggestions for people to approve or reject in a browser."""

from consumers.review.service import NAME, ReviewConsole, build

__all__ = ["NAME", "ReviewConsole", "build"]
